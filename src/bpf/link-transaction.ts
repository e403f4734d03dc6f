/* Program swaps that can be undone: every pinned link and program pin changed while a new
 * datapath is attached is recorded with what it held before, so that a failure half-way puts the
 * old programs back (the old datapath stays whole) instead of leaving some hooks on new programs
 * and others on old ones.
 */
import * as fs from 'node:fs';
import { BpfError, check, loadShim } from './shim';
import type { AttachResult, BpfObject } from './object';

/** Suffix of a pin written beside its final path, then renamed over it (bpffs renames atomically). */
export const PENDING_SUFFIX = ':pending';

/** Pins fd at path atomically: pinned beside it, then renamed over whatever path held. */
export function pinReplacing(fd: number, pinPath: string): void {
  const s = loadShim();
  const pending = pinPath + PENDING_SUFFIX;
  fs.rmSync(pending, { force: true });
  const ret = s.objPin(fd, pending);
  if (ret < 0) throw new BpfError(`pin ${pending}`, -ret);
  try {
    fs.renameSync(pending, pinPath);
  } catch (e) {
    fs.rmSync(pending, { force: true });
    throw e;
  }
}

/** The program a pinned link runs now, as an fd the caller closes; undefined without a pin. */
function linkProgramFd(linkPin: string): number | undefined {
  if (!fs.existsSync(linkPin)) return undefined;
  const s = loadShim();
  const id = new Uint32Array(1);
  if (s.linkProgId(linkPin, id) < 0) return undefined; // a stale pin: nothing to restore
  const fd = s.progGetFdById(id[0]);
  if (fd < 0) throw new BpfError(`open program id ${id[0]} of link ${linkPin}`, -fd);
  return fd;
}

export class LinkTransaction {
  /** each step's undo; its errors name the pin they concern */
  private readonly undo: Array<{ run: () => void }> = [];
  private readonly held: number[] = [];

  private hold(fd: number | undefined): number | undefined {
    if (fd !== undefined && fd >= 0) this.held.push(fd);
    return fd;
  }

  /** Attaches (or swaps, BPF_LINK_UPDATE) a cgroup program through the link pinned at linkPin. */
  attachCgroup(obj: BpfObject, prog: string, cgroupPath: string, linkPin: string): AttachResult {
    const s = loadShim();
    const oldProg = this.hold(linkProgramFd(linkPin));
    // holding the old link keeps it (and its attachment) alive should its pin be replaced
    const oldLink = fs.existsSync(linkPin) ? this.hold(s.objGet(linkPin)) : undefined;
    const result = obj.attachCgroup(prog, cgroupPath, linkPin);
    if (result === 'updated' && oldProg !== undefined) {
      this.undo.push({ run: () => updateLinkFd(linkPin, oldProg) });
    } else {
      this.undo.push({
        run: () => {
          if (oldLink !== undefined && oldLink >= 0) pinReplacing(oldLink, linkPin);
          else fs.rmSync(linkPin, { force: true });
        },
      });
    }
    return result;
  }

  /** Pins a loaded program at pinPath, replacing the previous pin atomically. */
  pinProgram(obj: BpfObject, prog: string, pinPath: string): void {
    const s = loadShim();
    const old = fs.existsSync(pinPath) ? this.hold(s.objGet(pinPath)) : undefined;
    pinReplacing(obj.progFd(prog), pinPath);
    this.undo.push({
      run: () => {
        if (old !== undefined && old >= 0) pinReplacing(old, pinPath);
        else fs.rmSync(pinPath, { force: true });
      },
    });
  }

  /** Swaps the program behind an existing pinned link (per-pod links) for the pinned progPin. */
  updateLink(linkPin: string, progPin: string): void {
    const s = loadShim();
    const oldProg = this.hold(linkProgramFd(linkPin));
    const fd = s.objGet(progPin);
    if (fd < 0) throw new BpfError(`open program ${progPin}`, -fd);
    try {
      updateLinkFd(linkPin, fd);
    } finally {
      s.close(fd);
    }
    if (oldProg !== undefined) this.undo.push({ run: () => updateLinkFd(linkPin, oldProg) });
  }

  /** Puts back what every recorded step replaced, newest first; returns what could not be. */
  rollback(): string[] {
    const failed: string[] = [];
    for (const step of this.undo.reverse()) {
      try {
        step.run();
      } catch (e) {
        failed.push((e as Error).message);
      }
    }
    this.undo.length = 0;
    this.release();
    return failed;
  }

  /** Keeps every change; releases what was held for a rollback. */
  commit(): void {
    this.undo.length = 0;
    this.release();
  }

  private release(): void {
    const s = loadShim();
    for (const fd of this.held.splice(0)) s.close(fd);
  }
}

function updateLinkFd(linkPin: string, progFd: number): void {
  check(loadShim().linkUpdateProg(linkPin, progFd), `update link ${linkPin}`);
}
