import { Box, Text } from 'ink';
import type { ReviewDecision, ReviewStatus } from '../../api/review.js';
import { formatClock, formatCountdown, formatSpan } from './format.js';
import { Spinner } from './spinner.js';

export interface AccessWaitProps {
  connection: string;
  reviewId: string;
  /** The requester's reason, echoed so they can see what approvers see. */
  reason: string;
  durationMs: number;
  /**
   * The review's decisions so far. Approvals are listed by name; a `reject` decision supplies the name and reason
   * on the final line. Passing `review.decisions` as is works.
   */
  approvals: ReviewDecision[];
  minApprovals: number;
  status: ReviewStatus;
  /** When the request was filed (ms); elapsed time counts from here. */
  startedAt: number;
  now: number;
  /** When a pending request expires, to show a countdown. */
  expiresAt?: number;
  /** When the grant ends, once approved. */
  grantExpiresAt?: number;
  /** Animate the spinner; tests pass false so no timer runs. */
  animate?: boolean;
}

/**
 * The waiting line of `hoopctl connect --reason … --duration …` while an access review is pending, and the final
 * line once it is decided. Pure; the command re-renders it with the review from the broker's event stream.
 */
export function AccessWait(props: AccessWaitProps) {
  const { reviewId, connection, status, now, startedAt } = props;
  const approvers = props.approvals.filter((d) => d.action === 'approve').map((d) => d.name);
  const approvalLine = `approvals ${approvers.length}/${props.minApprovals}${approvers.length > 0 ? `: ${approvers.join(', ')}` : ''}`;
  const elapsed = formatClock(now - startedAt);

  if (status === 'pending') {
    return (
      <Box flexDirection="column">
        <Box>
          <Spinner active={props.animate ?? true} />
          <Text>
            {' '}
            waiting for approval of {reviewId} (elapsed {elapsed})
            {props.expiresAt !== undefined ? ` · expires ${formatCountdown(props.expiresAt, now)}` : ''}
          </Text>
        </Box>
        <Text dimColor>
          {'  '}access to {connection} for {formatSpan(props.durationMs)} · reason: {props.reason}
        </Text>
        <Text>
          {'  '}
          {approvalLine}
        </Text>
        <Text dimColor>{'  '}Ctrl-C to stop waiting</Text>
      </Box>
    );
  }

  return <FinalLine {...props} approvers={approvers} elapsed={elapsed} />;
}

function FinalLine(props: AccessWaitProps & { approvers: string[]; elapsed: string }) {
  const { reviewId, connection, now } = props;
  switch (props.status) {
    case 'approved': {
      const ends = props.grantExpiresAt !== undefined ? ` (ends ${formatCountdown(props.grantExpiresAt, now)})` : '';
      const by = props.approvers.length > 0 ? ` by ${props.approvers.join(', ')}` : '';
      return (
        <Box flexDirection="column">
          <Text color="green">
            ✔ access to {connection} granted for {formatSpan(props.durationMs)}
            {ends}
          </Text>
          <Text dimColor>
            {'  '}review {reviewId} approved{by} after {props.elapsed}
          </Text>
        </Box>
      );
    }
    case 'rejected': {
      const rejection = [...props.approvals].reverse().find((d) => d.action === 'reject');
      return (
        <Text color="red">
          ✘ review {reviewId} rejected{rejection ? ` by ${rejection.name}` : ''}: {rejection?.reason || 'no reason given'}
        </Text>
      );
    }
    case 'expired':
      return (
        <Box flexDirection="column">
          <Text color="red">
            ✘ review {reviewId} expired after {props.elapsed} with {props.approvers.length}/{props.minApprovals} approvals
          </Text>
          <Text dimColor>  nobody decided in time; ask an approver and run the command again</Text>
        </Box>
      );
    case 'withdrawn':
      return <Text color="yellow">review {reviewId} withdrawn</Text>;
    case 'revoked':
      return <Text color="red">✘ access to {connection} was revoked (review {reviewId})</Text>;
    case 'orphaned':
      return (
        <Text color="red">
          ✘ review {reviewId} was lost when the broker restarted; run the command again to file a new one
        </Text>
      );
    default:
      return null;
  }
}
