/* Addresses of the benchmarks' generated Services and endpoints, for up to 1,000,000 Services and
 * about 980,000 endpoints (the scale benchmark goes to 100,000 / 500,000). Both ranges stay clear
 * of the harness's pod subnets (10.16-239.x.x, sim-node.ts) and of the tests' VIPs (10.96/10.97):
 *   Service i   → VIP 172.16.0.1 upwards, through 172.31.255.254 (172.16.0.0/12);
 *   endpoint j  → 10.241.0.1 upwards, through 10.255.255.254 (fake: nothing answers there).
 */

/** The VIP of generated Service i (0 ≤ i < 1,048,574). */
export function serviceVip(i: number): string {
  const k = i + 1;
  if (!Number.isInteger(i) || i < 0 || k > 0xffffe)
    throw new RangeError(`Cannot generate the VIP of Service ${i}: outside 172.16.0.0/12`);
  return `172.${16 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`;
}

/** The address of generated endpoint j (0 ≤ j < 983,038). */
export function endpointIp(j: number): string {
  const k = j + 1;
  if (!Number.isInteger(j) || j < 0 || k > 15 * 65536 - 2)
    throw new RangeError(`Cannot generate endpoint address ${j}: outside 10.241.0.1-10.255.255.254`);
  return `10.${241 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`;
}
