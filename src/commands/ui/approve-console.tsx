import { Box, Text, useInput, useStdout, type Key } from 'ink';
import { useCallback, useEffect, useRef, useState } from 'react';
import { describeAgent } from '../../api/agent-headers.js';
import type { Identity } from '../../api/identity.js';
import type { Review } from '../../api/review.js';
import { decisionRight, isActiveGrant, revokeRight, type DecisionRight } from './decision-rights.js';
import { countApprovals, describeIdentity, formatAge, formatCountdown, formatSpan, oneLine, summarizeReview } from './format.js';
import { editReason, ReasonPrompt, type ReasonDraft } from './reason-prompt.js';

export interface ApproveConsoleProps {
  /** Current reviews from the broker; the command re-renders with a new array on every stream event. */
  reviews: Review[];
  /** The approver using the console. */
  me: Identity;
  /** Clock in ms, ticked by the command each second; every age and countdown is computed from it. */
  now: number;
  /** Whether the broker event stream is up. */
  connected: boolean;
  /** May reject; the error's message is shown to the approver. */
  onDecide(id: string, action: 'approve' | 'reject', reason: string): Promise<void>;
  /** Without it the grants section is read-only. */
  onRevoke?(id: string, reason: string): Promise<void>;
  onQuit(): void;
}

type Section = 'reviews' | 'grants';
type PromptAction = 'approve' | 'reject' | 'revoke';
type Prompt = { action: PromptAction; id: string; draft: ReasonDraft };
type Notice = { tone: 'busy' | 'ok' | 'error' | 'refused'; text: string };
/** The selection follows an id so that live inserts and removals do not move it; the index is the fallback. */
type Selection = { id?: string; index: number };
interface View {
  section: Section;
  detailId: string | undefined;
  prompt: Prompt | undefined;
  notice: Notice | undefined;
  reviewSel: Selection;
  grantSel: Selection;
}
const INITIAL_VIEW: View = { section: 'reviews', detailId: undefined, prompt: undefined, notice: undefined, reviewSel: { index: 0 }, grantSel: { index: 0 } };

const PAST: Record<PromptAction, string> = { approve: 'Approved', reject: 'Rejected', revoke: 'Revoked the grant of' };

/**
 * `hoopctl approve`: pending reviews, updated live, with a detail view, approve/reject with a reason, and the
 * active access grants with revoke. Pure: everything arrives in props, every effect leaves through a callback.
 */
export function ApproveConsole(props: ApproveConsoleProps) {
  const { reviews, me, now, connected } = props;
  // Everything the keys change lives in one state object mirrored in a ref: a key is handled against the latest
  // state, not the last render's, so presses that arrive before React renders again (a busy machine, a fast
  // typist, a reason typed quickly) each act in order instead of landing on a stale row or dropping characters.
  const [view, setView] = useState<View>(INITIAL_VIEW);
  const viewRef = useRef(view);
  const update = useCallback((patch: Partial<View> | ((v: View) => Partial<View>)) => {
    const next = { ...viewRef.current, ...(typeof patch === 'function' ? patch(viewRef.current) : patch) };
    viewRef.current = next;
    setView(next);
  }, []);
  const mounted = useRef(true);
  useEffect(() => {
    mounted.current = true;
    return () => void (mounted.current = false);
  }, []);

  const { stdout } = useStdout();
  // Each review row takes two lines; leave room for the header, the column titles and the footer.
  const pageSize = Math.max(3, Math.floor(((stdout?.rows ?? 30) - 9) / 2));

  const pending = pendingReviews(reviews);
  const grants = activeGrants(reviews, now);
  const derive = (v: View) => {
    const reviewIndex = resolveSelection(pending, v.reviewSel);
    const grantIndex = resolveSelection(grants, v.grantSel);
    return {
      reviewIndex,
      grantIndex,
      selectedReview: reviewIndex >= 0 ? pending[reviewIndex] : undefined,
      selectedGrant: grantIndex >= 0 ? grants[grantIndex] : undefined,
      detail: v.detailId === undefined ? undefined : reviews.find((r) => r.id === v.detailId),
    };
  };
  const { section, detailId, prompt, notice } = view;
  const { reviewIndex, grantIndex, selectedReview, selectedGrant, detail } = derive(view);

  // Pin the selection to the item under it, so a review arriving above it later does not move it.
  useEffect(() => {
    if (selectedReview && selectedReview.id !== view.reviewSel.id) update({ reviewSel: { id: selectedReview.id, index: reviewIndex } });
  }, [selectedReview?.id, reviewIndex]);
  useEffect(() => {
    if (selectedGrant && selectedGrant.id !== view.grantSel.id) update({ grantSel: { id: selectedGrant.id, index: grantIndex } });
  }, [selectedGrant?.id, grantIndex]);

  const move = (v: View, delta: number) => {
    const step = (items: Review[], sel: Selection): Selection => {
      const i = clamp(resolveSelection(items, sel) + delta, items.length);
      return { id: items[i]!.id, index: i };
    };
    if (v.section === 'reviews' && pending.length > 0) update({ reviewSel: step(pending, v.reviewSel) });
    else if (v.section === 'grants' && grants.length > 0) update({ grantSel: step(grants, v.grantSel) });
  };

  const ask = (v: View, review: Review | undefined, action: PromptAction) => {
    if (!review) return;
    if (v.notice?.tone === 'busy') return update({ notice: { tone: 'busy', text: v.notice.text.replace(/( \(one at a time\))?$/, ' (one at a time)') } });
    if (action === 'revoke' && !props.onRevoke) return update({ notice: { tone: 'refused', text: 'Revoking is not available in this console.' } });
    const right = action === 'revoke' ? revokeRight(review, me, now) : decisionRight(review, me);
    if (!right.may) return update({ notice: { tone: 'refused', text: `You can't ${action} ${review.id}: ${right.why}.` } });
    update({ notice: undefined, prompt: { action, id: review.id, draft: { value: '' } } });
  };

  const send = async (action: PromptAction, id: string, reason: string) => {
    update({ prompt: undefined, notice: { tone: 'busy', text: `sending ${action} for ${id}…` } });
    try {
      // A callback that throws synchronously is reported the same way as one that rejects.
      await Promise.resolve().then(() =>
        action === 'revoke' ? props.onRevoke!(id, reason) : props.onDecide(id, action, reason),
      );
      if (!mounted.current) return;
      update((v) => ({
        notice: { tone: 'ok', text: `${PAST[action]} ${id}${reason ? ` — “${reason}”` : ''}.` },
        detailId: v.detailId === id ? undefined : v.detailId,
      }));
    } catch (error) {
      if (!mounted.current) return;
      const message = error instanceof Error ? error.message : String(error);
      update({ notice: { tone: 'error', text: `Could not ${action} ${id}: ${message}` } });
    }
  };

  const handleKey = (input: string, key: Key) => {
    const v = viewRef.current;
    const d = derive(v);
    if (v.prompt) {
      const edit = editReason(v.prompt.draft, v.prompt.action !== 'approve', input, key);
      if (edit.kind === 'cancel') return update({ prompt: undefined });
      if (edit.kind === 'submit') return void send(v.prompt.action, v.prompt.id, edit.reason);
      return update({ prompt: { ...v.prompt, draft: edit.draft } });
    }
    if (input === 'q' && !key.ctrl) return props.onQuit();
    if (v.detailId !== undefined) {
      if (key.escape || key.backspace || key.delete || key.leftArrow) return update({ detailId: undefined });
      if (input === 'a' || input === 'r') return ask(v, d.detail, input === 'a' ? 'approve' : 'reject');
      if (input === 'x') return ask(v, d.detail, 'revoke');
      return;
    }
    if (key.tab) return update({ notice: undefined, section: v.section === 'reviews' ? 'grants' : 'reviews' });
    if (key.upArrow) return move(v, -1);
    if (key.downArrow) return move(v, 1);
    // A held key or a busy terminal delivers several presses in one read ("jjj"): each one moves.
    if (/^[jk]+$/.test(input)) return move(v, input.split('').reduce((n, c) => n + (c === 'j' ? 1 : -1), 0));
    if (key.escape) return update({ notice: undefined });
    const selected = v.section === 'reviews' ? d.selectedReview : d.selectedGrant;
    if (key.return && selected) return update({ detailId: selected.id });
    if (v.section === 'reviews' && (input === 'a' || input === 'r')) return ask(v, selected, input === 'a' ? 'approve' : 'reject');
    if (v.section === 'grants' && input === 'x') return ask(v, selected, 'revoke');
  };
  // One subscription for the console's lifetime that always calls the latest render's handler (for its props).
  const latestHandleKey = useRef(handleKey);
  latestHandleKey.current = handleKey;
  useInput(useCallback((input: string, key: Key) => latestHandleKey.current(input, key), []));

  return (
    <Box flexDirection="column">
      <Header me={me} connected={connected} pending={pending} grants={grants} />
      {detailId !== undefined ? (
        detail ? (
          <ReviewDetail review={detail} me={me} now={now} />
        ) : (
          <Text color="yellow">Review {detailId} is gone from the broker's list.</Text>
        )
      ) : section === 'reviews' ? (
        <ReviewList reviews={pending} selected={reviewIndex} me={me} now={now} connected={connected} pageSize={pageSize} />
      ) : (
        <GrantList grants={grants} selected={grantIndex} me={me} now={now} pageSize={pageSize * 2} />
      )}
      <Box marginTop={1} flexDirection="column">
        {prompt ? (
          <ReasonPrompt label={`Reason to ${prompt.action} ${prompt.id}`} required={prompt.action !== 'approve'} draft={prompt.draft} />
        ) : (
          <>
            {notice ? <NoticeLine notice={notice} /> : null}
            <KeyHelp detail={detailId !== undefined} section={section} canRevoke={props.onRevoke !== undefined} />
          </>
        )}
      </Box>
    </Box>
  );
}

/** Oldest first: it expires soonest, and new arrivals land at the bottom instead of shifting the rows. */
export function pendingReviews(reviews: Review[]): Review[] {
  return reviews
    .filter((r) => r.status === 'pending')
    .sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id));
}

/** Ending soonest first. */
export function activeGrants(reviews: Review[], now: number): Review[] {
  return reviews
    .filter((r) => isActiveGrant(r, now))
    .sort((a, b) => a.grantExpiresAt! - b.grantExpiresAt! || a.id.localeCompare(b.id));
}

function resolveSelection(items: Review[], sel: Selection): number {
  if (items.length === 0) return -1;
  const found = sel.id === undefined ? -1 : items.findIndex((r) => r.id === sel.id);
  // The selected review left the list (decided elsewhere, expired): stay at the same height.
  return found >= 0 ? found : Math.min(sel.index, items.length - 1);
}

function clamp(i: number, length: number): number {
  return Math.max(0, Math.min(length - 1, i));
}

/** The rows to draw so that the selected one is visible. */
function visibleWindow(length: number, selected: number, size: number): [number, number] {
  if (length <= size) return [0, length];
  const start = Math.max(0, Math.min(length - size, selected - Math.floor(size / 2)));
  return [start, start + size];
}

function Header({ me, connected, pending, grants }: { me: Identity; connected: boolean; pending: Review[]; grants: Review[] }) {
  const mine = pending.filter((r) => decisionRight(r, me).may).length;
  return (
    <Box flexDirection="column" marginBottom={1}>
      <Box>
        <Text bold>hoopctl approve</Text>
        <Text> · {describeIdentity(me)}</Text>
        <Text dimColor> · groups: {me.groups.length > 0 ? me.groups.join(', ') : '(none)'}</Text>
        <Text> · </Text>
        {connected ? <Text color="green">● live</Text> : <Text color="yellow">○ reconnecting…</Text>}
      </Box>
      <Text>
        {pending.length} pending · {mine} yours to decide · {grants.length} active {grants.length === 1 ? 'grant' : 'grants'}
      </Text>
    </Box>
  );
}

function ReviewList(props: { reviews: Review[]; selected: number; me: Identity; now: number; connected: boolean; pageSize: number }) {
  const { reviews, selected, me, now, connected } = props;
  if (reviews.length === 0) {
    return <Text dimColor>No pending reviews — waiting for new ones ({connected ? 'live' : 'reconnecting…'})</Text>;
  }
  const idWidth = Math.max(2, ...reviews.map((r) => r.id.length));
  const [start, end] = visibleWindow(reviews.length, selected, props.pageSize);
  return (
    <Box flexDirection="column">
      <Box>
        <Text dimColor>
          {'  '}
          {'ID'.padEnd(idWidth)}  {'KIND'.padEnd(9)}  REQUESTER → CONNECTION
        </Text>
        <Box flexGrow={1} />
        <Text dimColor>{'AGE'.padStart(9)}  {'APPROVALS'.padStart(9)}</Text>
      </Box>
      {start > 0 ? <Text dimColor>  ↑ {start} more</Text> : null}
      {reviews.slice(start, end).map((review, i) => (
        <ReviewRow key={review.id} review={review} selected={start + i === selected} idWidth={idWidth} right={decisionRight(review, me)} now={now} />
      ))}
      {end < reviews.length ? <Text dimColor>  ↓ {reviews.length - end} more</Text> : null}
    </Box>
  );
}

function ReviewRow({ review, selected, idWidth, right, now }: { review: Review; selected: boolean; idWidth: number; right: DecisionRight; now: number }) {
  const approvals = `${countApprovals(review)}/${review.minApprovals}`;
  return (
    <Box flexDirection="column">
      <Box>
        <Text color={selected ? 'cyan' : undefined} bold={selected}>
          {selected ? '› ' : '  '}
          {review.id.padEnd(idWidth)}  {review.kind.padEnd(9)}{'  '}
        </Text>
        <Box flexGrow={1} flexShrink={1}>
          <Text wrap="truncate-end">
            {describeIdentity(review.requester)} → {review.connection}
          </Text>
        </Box>
        <Text>
          {formatSpan(now - review.createdAt).padStart(9)}  {approvals.padStart(9)}
        </Text>
      </Box>
      <Box paddingLeft={idWidth + 4}>
        <Box flexGrow={1} flexShrink={1}>
          <Text wrap="truncate-end" dimColor={!selected}>
            {summarizeReview(review)}
          </Text>
        </Box>
        <Box marginLeft={2} flexShrink={0}>
          <RightLabel right={right} />
        </Box>
      </Box>
    </Box>
  );
}

function RightLabel({ right }: { right: DecisionRight }) {
  return right.may ? <Text color="green">you may decide</Text> : <Text color="yellow">{right.why}</Text>;
}

function GrantList(props: { grants: Review[]; selected: number; me: Identity; now: number; pageSize: number }) {
  const { grants, selected, me, now } = props;
  if (grants.length === 0) return <Text dimColor>No active access grants.</Text>;
  const idWidth = Math.max(2, ...grants.map((r) => r.id.length));
  const [start, end] = visibleWindow(grants.length, selected, props.pageSize);
  return (
    <Box flexDirection="column">
      <Text bold>Active access grants</Text>
      {start > 0 ? <Text dimColor>  ↑ {start} more</Text> : null}
      {grants.slice(start, end).map((grant, i) => {
        const isSelected = start + i === selected;
        const right = revokeRight(grant, me, now);
        const approvers = grant.decisions.filter((d) => d.action === 'approve').map((d) => d.name);
        return (
          <Box key={grant.id}>
            <Text color={isSelected ? 'cyan' : undefined} bold={isSelected}>
              {isSelected ? '› ' : '  '}
              {grant.id.padEnd(idWidth)}{'  '}
            </Text>
            <Box flexGrow={1} flexShrink={1}>
              <Text wrap="truncate-end">
                {describeIdentity(grant.requester)} → {grant.connection}
                {approvers.length > 0 ? ` · approved by ${approvers.join(', ')}` : ''}
              </Text>
            </Box>
            <Box marginLeft={2} flexShrink={0}>
              <Text>{formatSpan(grant.grantExpiresAt! - now)} left</Text>
              {right.may ? null : <Text color="yellow"> · {right.why}</Text>}
            </Box>
          </Box>
        );
      })}
      {end < grants.length ? <Text dimColor>  ↓ {grants.length - end} more</Text> : null}
    </Box>
  );
}

function ReviewDetail({ review, me, now }: { review: Review; me: Identity; now: number }) {
  const who = review.requester;
  const right = decisionRight(review, me);
  const rows: Array<[string, string]> = [
    ['Requester', who.name],
    ['Identity type', who.kind === 'human' ? 'human' : 'service (non-human identity)'],
    ['Client id', who.clientId ?? '—'],
    ['Groups', who.groups.length > 0 ? who.groups.join(', ') : '—'],
    // A CI job's token names the job: approvers see which repository, branch and run asks.
    // An AI agent's tool call: approvers see which agent host asks, beside the agent's own identity above.
    ...(who.via ? [['Agent', describeAgent(who)!] as [string, string]] : []),
    ...(who.claims ? [['Job', Object.entries(who.claims).map(([k, v]) => `${k}=${v}`).join(' · ')] as [string, string]] : []),
    ['Connection', review.connection],
  ];
  if (review.kind === 'statement') rows.push(['Statement', review.statement ?? '(not recorded)']);
  else rows.push(['Window', review.durationMs === undefined ? '—' : `access for ${formatSpan(review.durationMs)}`]);
  rows.push(['Rule', review.rule ?? '—'], ['Reason', review.reason ? oneLine(review.reason) : '—'], ['Age', formatAge(review.createdAt, now)]);
  if (review.status === 'pending') rows.push(['Expires', formatCountdown(review.expiresAt, now)]);
  if (review.grantExpiresAt !== undefined && review.status === 'approved') {
    rows.push(['Grant ends', formatCountdown(review.grantExpiresAt, now)]);
  }
  rows.push(['Approvers', `${review.approverGroups.join(', ') || '—'} · ${countApprovals(review)}/${review.minApprovals} approvals`]);
  const width = Math.max(...rows.map(([label]) => label.length)) + 2;
  return (
    <Box flexDirection="column">
      <Text bold>
        Review {review.id} · {review.kind} · {review.status}
      </Text>
      {rows.map(([label, value]) => (
        <Box key={label}>
          <Box width={width} flexShrink={0}>
            <Text dimColor>{label}</Text>
          </Box>
          <Text>{value}</Text>
        </Box>
      ))}
      <Box>
        <Box width={width} flexShrink={0}>
          <Text dimColor>Decisions</Text>
        </Box>
        <Box flexDirection="column">
          {review.decisions.length === 0 ? <Text>none yet</Text> : null}
          {review.decisions.map((d, i) => (
            <Text key={i}>
              {d.name} {d.action === 'approve' ? 'approved' : d.action === 'reject' ? 'rejected' : 'revoked'} {formatAge(d.at, now)}
              {d.reason ? `: ${d.reason}` : ''}
            </Text>
          ))}
        </Box>
      </Box>
      <Box>
        <Box width={width} flexShrink={0}>
          <Text dimColor>You</Text>
        </Box>
        <RightLabel right={right} />
      </Box>
    </Box>
  );
}

function NoticeLine({ notice }: { notice: Notice }) {
  const color = { busy: 'cyan', ok: 'green', error: 'red', refused: 'yellow' }[notice.tone];
  return <Text color={color}>{notice.text}</Text>;
}

function KeyHelp({ detail, section, canRevoke }: { detail: boolean; section: Section; canRevoke: boolean }) {
  const keys = detail
    ? ['a approve', 'r reject', ...(canRevoke ? ['x revoke'] : []), 'esc back', 'q quit']
    : section === 'reviews'
      ? ['↑/↓ move', 'enter details', 'a approve', 'r reject', 'tab grants', 'q quit']
      : ['↑/↓ move', 'enter details', ...(canRevoke ? ['x revoke'] : []), 'tab reviews', 'q quit'];
  return <Text dimColor>{keys.join(' · ')}</Text>;
}
