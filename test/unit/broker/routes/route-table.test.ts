import { describe, expect, it } from 'vitest';
import { API_ROUTES, matchRoute } from '../../../../src/broker/routes/route-table.js';

describe('the route table', () => {
  it('prefers a literal segment to a param: the reviews stream is not a review called "stream"', () => {
    expect(matchRoute('GET', '/api/v1/reviews/stream')?.id).toBe('streamReviews');
    expect(matchRoute('GET', '/api/v1/reviews/rev_00ff')).toMatchObject({ id: 'getReview', params: { id: 'rev_00ff' } });
  });

  it('decodes params and refuses ids of the wrong shape and undecodable segments', () => {
    expect(matchRoute('GET', '/api/v1/connections/app%2Dpg')).toMatchObject({ id: 'getConnection', params: { name: 'app-pg' } });
    expect(matchRoute('GET', '/api/v1/reviews/123')).toBeUndefined();
    expect(matchRoute('POST', '/api/v1/locks/not-a-lock/lift')).toBeUndefined();
    expect(matchRoute('GET', '/api/v1/sessions/%E0%A4%A')).toBeUndefined();
    expect(matchRoute('GET', '/api/v1/sessions/')).toBeUndefined();
  });

  it('matches on the method: a GET to a POST-only route is no route', () => {
    expect(matchRoute('GET', '/api/v1/sessions/s1/end')).toBeUndefined();
    expect(matchRoute('POST', '/api/v1/sessions/s1/end')?.id).toBe('endSession');
  });

  it('has no two routes that answer the same method and path', () => {
    const keys = Object.values(API_ROUTES).map((r) => `${r.method} ${r.path.replace(/:[^/]+/g, ':')}`);
    expect(new Set(keys).size).toBe(keys.length);
  });
});
