// Backend registry: backends register a factory with a priority; the first use picks the
// highest-priority one whose factory succeeds, unless QUANTLORA_BACKEND or setBackend() forces one.

import type { Backend } from './backend.js';
import { BackendError } from './errors.js';

export type BackendFactory = () => Backend | Promise<Backend>;

interface Entry {
  name: string;
  factory: BackendFactory;
  priority: number;
  instance?: Backend;
  failure?: string;
}

const entries = new Map<string, Entry>();
let active: Backend | undefined;

export function registerBackend(name: string, factory: BackendFactory, priority: number): void {
  entries.set(name, { name, factory, priority });
  if (active?.name === name) active = undefined;
}

export function removeBackend(name: string): void {
  entries.delete(name);
  if (active?.name === name) active = undefined;
}

function envBackend(): string | undefined {
  const env = typeof process !== 'undefined' ? process.env?.QUANTLORA_BACKEND : undefined;
  return env ? env.trim() : undefined;
}

function byPriority(): Entry[] {
  return [...entries.values()].sort((a, b) => b.priority - a.priority);
}

function describe(e: Entry): string {
  return `${e.name} (priority ${e.priority}): ${e.failure ?? 'not tried'}`;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function trySync(e: Entry): Backend | undefined {
  if (e.instance) return e.instance;
  if (e.failure) return undefined;
  try {
    const b = e.factory();
    if (b instanceof Promise) {
      e.failure = 'needs async initialization: call `await initBackend()` first';
      b.then((inst) => { e.instance = inst; e.failure = undefined; }, (err) => { e.failure = errorText(err); });
      return undefined;
    }
    e.instance = b;
    return b;
  } catch (err) {
    e.failure = errorText(err);
    return undefined;
  }
}

async function tryAsync(e: Entry): Promise<Backend | undefined> {
  if (e.instance) return e.instance;
  try {
    e.instance = await e.factory();
    e.failure = undefined;
    return e.instance;
  } catch (err) {
    e.failure = errorText(err);
    return undefined;
  }
}

function forcedError(name: string, reason: string): BackendError {
  const known = [...entries.keys()].join(', ') || 'none';
  return new BackendError(`backend '${name}' was forced (${reason}) but ${entries.has(name) ? `failed: ${entries.get(name)!.failure}` : `is not registered; registered backends: ${known}`}`);
}

function noneError(): BackendError {
  const tried = byPriority().map(describe).join('; ');
  return new BackendError(`no backend could be initialized. Tried: ${tried || 'nothing is registered'}`);
}

/** The active backend, choosing one synchronously on first use. */
export function getBackend(): Backend {
  if (active) return active;
  const forced = envBackend();
  if (forced) {
    const e = entries.get(forced);
    const b = e && trySync(e);
    if (!b) throw forcedError(forced, 'QUANTLORA_BACKEND');
    return (active = b);
  }
  for (const e of byPriority()) {
    const b = trySync(e);
    if (b) return (active = b);
  }
  throw noneError();
}

/** Chooses the backend, awaiting factories that load asynchronously (WASM, GPU). */
export async function initBackend(name?: string): Promise<Backend> {
  const forced = name ?? envBackend();
  if (forced) {
    const e = entries.get(forced);
    const b = e && (await tryAsync(e));
    if (!b) throw forcedError(forced, name ? 'initBackend()' : 'QUANTLORA_BACKEND');
    return (active = b);
  }
  for (const e of byPriority()) {
    const b = await tryAsync(e);
    if (b) return (active = b);
  }
  throw noneError();
}

/** Forces a backend by name (synchronous factories only; use initBackend for async ones). */
export function setBackend(name: string): Backend {
  const e = entries.get(name);
  const b = e && trySync(e);
  if (!b) throw forcedError(name, 'setBackend()');
  return (active = b);
}

/** A registered backend's instance by name, creating it if needed; throws BackendError if unavailable. */
export function backendByName(name: string): Backend {
  const e = entries.get(name);
  const b = e && trySync(e);
  if (!b) throw forcedError(name, 'backendByName()');
  return b;
}

export interface BackendStatus {
  name: string;
  priority: number;
  available: boolean;
  active: boolean;
  failure?: string;
}

/** Every registered backend, highest priority first, with whether its factory works here. */
export function backends(): BackendStatus[] {
  return byPriority().map((e) => {
    const b = trySync(e);
    return { name: e.name, priority: e.priority, available: !!b, active: !!b && b === active, failure: e.failure };
  });
}
