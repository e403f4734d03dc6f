/* Istio's per-interface sidecar annotations: validated as istio-cni validates them, and refused
 * with the reason, since a socket hook cannot see what they select (istio/istio
 * cni/pkg/plugin/sidecar_redirect.go, NewRedirect; pkg/util/net/ip.go, ValidateInterfaceNames;
 * tools/istio-iptables/pkg/capture/run.go for what the rules do).
 */

export const INTERFACE_ANNOTATION = {
  excludeInterfaces: 'traffic.sidecar.istio.io/excludeInterfaces',
  /** the newer name of kubevirtInterfaces; wins whenever it is present, even empty */
  rerouteVirtualInterfaces: 'istio.io/reroute-virtual-interfaces',
  /** deprecated; read only when reroute-virtual-interfaces is absent */
  kubevirtInterfaces: 'traffic.sidecar.istio.io/kubevirtInterfaces',
} as const;

/** Linux interface names as Istio accepts them: IFNAMSIZ-1 characters, no shell or iptables syntax. */
const MAX_IFNAME = 15;
const IFNAME = /^[a-zA-Z][a-zA-Z0-9_.-]*$/;

/** The interfaces of a comma-separated list (blanks around names allowed); throws on an invalid name. */
function parseInterfaces(name: string, value: string): string[] {
  if (value === '') return [];
  return value.split(',').map((raw) => {
    const item = raw.trim();
    if (item === '') throw new RangeError(`Cannot parse annotation ${name} "${value}": an interface name is empty`);
    if (item.length > MAX_IFNAME)
      throw new RangeError(`Cannot parse annotation ${name} "${value}": "${item}" is longer than ${MAX_IFNAME} characters`);
    if (!IFNAME.test(item))
      throw new RangeError(
        `Cannot parse annotation ${name} "${value}": "${item}" is not an interface name (a letter, then letters, digits, "_", "." or "-")`,
      );
    return item;
  });
}

/**
 * Why the pod's interface annotations cannot be honoured, or undefined when it has none (or
 * only empty ones, which Istio treats as absent). Throws RangeError on an invalid name, in
 * istio-cni's order: excludeInterfaces, then reroute-virtual-interfaces (or kubevirtInterfaces).
 */
export function interfaceRefusal(annotations: Record<string, string>): string | undefined {
  const excluded = parseInterfaces(
    INTERFACE_ANNOTATION.excludeInterfaces,
    annotations[INTERFACE_ANNOTATION.excludeInterfaces] ?? '',
  );
  const virtKey = Object.hasOwn(annotations, INTERFACE_ANNOTATION.rerouteVirtualInterfaces)
    ? INTERFACE_ANNOTATION.rerouteVirtualInterfaces
    : INTERFACE_ANNOTATION.kubevirtInterfaces;
  const virtual = parseInterfaces(virtKey, annotations[virtKey] ?? '');
  if (excluded.length) {
    // Istio: `-i IF -j RETURN` in PREROUTING and `-o IF -j RETURN` in OUTPUT
    return (
      `${INTERFACE_ANNOTATION.excludeInterfaces} "${excluded.join(',')}" is not supported by sluice: Istio leaves ` +
      `traffic arriving on these interfaces and connections routed out of them uncaptured, and a connect() hook runs ` +
      `before the route is chosen, so it cannot know the egress interface`
    );
  }
  if (virtual.length) {
    // Istio: `-i IF -j ISTIO_REDIRECT` in PREROUTING, traffic from a VM or nested container to the proxy
    return (
      `${virtKey} "${virtual.join(',')}" is not supported by sluice: Istio redirects traffic arriving on these ` +
      `interfaces (forwarded through the pod from a VM or nested container) to the proxy, and forwarded traffic ` +
      `never passes a socket of this pod, so a socket hook cannot capture it`
    );
  }
  return undefined;
}
