import { describe, expect, it } from 'vitest';
import { TrafficLedger } from '../../../../../src/broker/protocols/tcp/relay.js';

describe('TrafficLedger (what a tcp session records of its traffic)', () => {
  it('sums bytes each way per window, one event per window with traffic, and keeps an open window open', () => {
    const ledger = new TrafficLedger(1000, 10_000);
    ledger.add('client', 10, 10_100);
    ledger.add('target', 200, 10_400);
    ledger.add('client', 5, 10_900);
    expect(ledger.take(false, 10_950)).toEqual([]);
    ledger.add('target', 7, 12_500);
    expect(ledger.take(false, 12_600)).toEqual([{ from: 0, to: 1000, fromClient: 15, fromTarget: 200 }]);
    expect(ledger.take(false, 12_700)).toEqual([]);
    expect(ledger.take(false, 13_000)).toEqual([{ from: 2000, to: 3000, fromClient: 0, fromTarget: 7 }]);
    expect(ledger.totals()).toEqual({ client: 15, target: 207 });
  });

  it('closes the open window at the end of the session', () => {
    const ledger = new TrafficLedger(1000, 0);
    ledger.add('client', 3, 50);
    expect(ledger.take(true, 60)).toEqual([{ from: 0, to: 1000, fromClient: 3, fromTarget: 0 }]);
    expect(ledger.take(true, 70)).toEqual([]);
  });
});
