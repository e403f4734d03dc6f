/* The per-pod socket-LB opt-out annotation (socket-lb.sluice.io/disabled), as the agent reads it. */
import { describe, expect, test } from 'vitest';
import { SOCKET_LB_DISABLED_ANNOTATION, socketLbDisabled } from '../../src/lb/pod-opt-out';

const pod = (annotations?: Record<string, string>) => ({
  metadata: { name: 'p', namespace: 'ns', ...(annotations ? { annotations } : {}) },
});

describe('socket-lb.sluice.io/disabled', () => {
  test('"true" opts the pod out; "false", no annotation and no Pod object do not', () => {
    expect(SOCKET_LB_DISABLED_ANNOTATION).toBe('socket-lb.sluice.io/disabled');
    expect(socketLbDisabled(pod({ [SOCKET_LB_DISABLED_ANNOTATION]: 'true' }))).toEqual({ disabled: true });
    expect(socketLbDisabled(pod({ [SOCKET_LB_DISABLED_ANNOTATION]: 'false' }))).toEqual({ disabled: false });
    expect(socketLbDisabled(pod({ other: 'true' }))).toEqual({ disabled: false });
    expect(socketLbDisabled(pod())).toEqual({ disabled: false });
    expect(socketLbDisabled(undefined)).toEqual({ disabled: false });
  });

  test('any other value keeps socket-LB on and says why, with the value', () => {
    for (const v of ['True', 'yes', '1', '']) {
      expect(socketLbDisabled(pod({ [SOCKET_LB_DISABLED_ANNOTATION]: v }))).toEqual({
        disabled: false,
        invalid: `Cannot parse annotation socket-lb.sluice.io/disabled "${v}": expected "true" or "false"; socket-LB stays on`,
      });
    }
  });
});
