import { readFileSync } from 'node:fs';
const st = () => { globalThis.gc(); const s = readFileSync('/proc/self/status','utf8'); const g=(k)=>Number(new RegExp(k+':\\s+(\\d+)').exec(s)[1])/1024; const m=process.memoryUsage(); return `rss ${g('VmRSS').toFixed(1)} anon ${g('RssAnon').toFixed(1)} file ${g('RssFile').toFixed(1)} heapUsed ${(m.heapUsed/2**20).toFixed(1)} heapTotal ${(m.heapTotal/2**20).toFixed(1)} ext ${(m.external/2**20).toFixed(1)}`; };
console.log('base', st());
const mods = process.argv.slice(2);
for (const m of mods) { const t=performance.now(); await import(m.startsWith('.')? new URL(m, 'file:///work/wt/memory/dist/src/').href : m); console.log(m.padEnd(40), (performance.now()-t).toFixed(0)+'ms', st()); }
