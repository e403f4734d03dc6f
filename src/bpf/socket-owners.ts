/* The processes that hold the sockets a cgroup-attached datapath put into its sockhash: every
 * socket fd of the processes in cgroup-root and below. A sockhash reads back as socket cookies;
 * the socket itself is reached again through one of these fds (pidfd_getfd).
 */
import * as fs from 'node:fs';
import { pidsUnder } from '../cgroup-pids';
import { cgroup2Mount } from '../config';

export interface SocketFd {
  pid: number;
  fd: number;
}

/** Socket fds of the processes under cgroupRoot (read from /proc; processes may end meanwhile). */
export function socketFdsUnder(cgroupRoot: string, mount = cgroup2Mount()): SocketFd[] {
  const out: SocketFd[] = [];
  for (const pid of pidsUnder(cgroupRoot, mount)) {
    try {
      for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
        try {
          if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) out.push({ pid, fd: Number(fd) });
        } catch {
          /* closed meanwhile */
        }
      }
    } catch {
      /* the process ended while we looked */
    }
  }
  return out;
}
