import { Text } from 'ink';
import { useEffect, useState } from 'react';

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/** A braille spinner. `active={false}` draws a still frame and starts no timer, which is what tests want. */
export function Spinner({ active = true, intervalMs = 80 }: { active?: boolean; intervalMs?: number }) {
  const [frame, setFrame] = useState(0);
  useEffect(() => {
    if (!active) return;
    const timer = setInterval(() => setFrame((f) => (f + 1) % FRAMES.length), intervalMs);
    return () => clearInterval(timer);
  }, [active, intervalMs]);
  return <Text color="cyan">{FRAMES[frame]}</Text>;
}
