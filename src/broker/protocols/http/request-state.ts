import type { BodySample } from './body-masking.js';
import type { KubeExecRecording } from './kube-exec-recording.js';
import type { KubePortForwardRecording } from './kube-portforward-recording.js';
import type { ResponseState } from './response-pipeline.js';

/** What the recording of one request gathers while it is served. */
export interface RequestState extends ResponseState {
  seq: number;
  started: number;
  base: Record<string, unknown>;
  requestBytes: number;
  requestSample?: BodySample;
  requestType?: string;
  done: boolean;
}

/** A request upgraded to another protocol (WebSocket, SPDY), and what is recorded of its stream. */
export interface UpgradeState extends RequestState {
  protocol?: string;
  /** Resolves when either side of the upgraded connection is gone. */
  over: Promise<void>;
  end(): void;
  /** For kubectl exec/attach: where it runs, to record it as a terminal. */
  execWhere?: { namespace?: string; pod?: string; subresource: string; query: URLSearchParams };
  exec?: Promise<KubeExecRecording | undefined>;
  /** For kubectl port-forward: the pod, to record which ports were reached. */
  portForwardWhere?: { namespace?: string; pod?: string };
  portForward?: KubePortForwardRecording;
}
