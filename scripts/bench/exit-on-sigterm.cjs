// Preloaded into profiled bench processes: a normal exit on SIGTERM, so --cpu-prof writes its profile.
process.on('SIGTERM', () => process.exit(0));
