import { Box, Text, type Key } from 'ink';

export interface ReasonDraft {
  value: string;
  /** Shown under the input after a refused submit. */
  complaint?: string;
}

export type ReasonEdit = { kind: 'edit'; draft: ReasonDraft } | { kind: 'submit'; reason: string } | { kind: 'cancel' };

/**
 * One keypress applied to a reason being typed: typing appends, backspace deletes, ctrl+u clears, enter submits
 * (trimmed), esc cancels. An empty submit is refused when a reason is `required`.
 *
 * A reducer rather than a component with its own `useInput`, so the console owns every key: a second input hook
 * would only start listening after React's effects run, and keys typed in between would go astray.
 */
export function editReason(draft: ReasonDraft, required: boolean, input: string, key: Key): ReasonEdit {
  if (key.escape) return { kind: 'cancel' };
  if (key.return) {
    const reason = draft.value.trim();
    if (required && reason === '') {
      return { kind: 'edit', draft: { value: draft.value, complaint: 'A reason is required. Type one, or press esc to cancel.' } };
    }
    return { kind: 'submit', reason };
  }
  // Terminals send either code for the backspace key; the prompt has no cursor to delete forward from.
  if (key.backspace || key.delete) return { kind: 'edit', draft: { value: Array.from(draft.value).slice(0, -1).join('') } };
  if (key.ctrl && input === 'u') return { kind: 'edit', draft: { value: '' } };
  if (key.ctrl || key.meta || key.tab || key.upArrow || key.downArrow || key.leftArrow || key.rightArrow) {
    return { kind: 'edit', draft };
  }
  // A paste arrives as one chunk and may carry line breaks or other control characters.
  const text = input.replace(/[\r\n\t]+/g, ' ').replace(/[\u0000-\u001f\u007f]/g, '');
  return text === '' ? { kind: 'edit', draft } : { kind: 'edit', draft: { value: draft.value + text } };
}

export interface ReasonPromptProps {
  /** What the reason is for, e.g. `Reason to reject rv-12`. */
  label: string;
  required: boolean;
  draft: ReasonDraft;
}

export function ReasonPrompt({ label, required, draft }: ReasonPromptProps) {
  return (
    <Box flexDirection="column">
      <Box>
        <Text bold>
          {label} {required ? '(required)' : '(optional)'}:{' '}
        </Text>
        <Text>{draft.value}</Text>
        <Text inverse> </Text>
      </Box>
      {draft.complaint ? <Text color="yellow">{draft.complaint}</Text> : null}
      <Text dimColor>enter sends · esc cancels</Text>
    </Box>
  );
}
