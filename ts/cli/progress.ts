// A progress line on stderr: redrawn in place on a terminal, a line every 10% (or 30 s) otherwise.

export class Progress {
  private start = Date.now();
  private lastLine = 0;
  private lastPct = -1;
  private readonly tty = !!process.stderr.isTTY;

  constructor(private readonly label: string, private readonly total: number, private readonly quiet = false) {}

  update(done: number, extra = ''): void {
    if (this.quiet) return;
    const elapsed = (Date.now() - this.start) / 1000;
    const eta = done > 0 ? (elapsed / done) * (this.total - done) : 0;
    const width = 24;
    const filled = Math.round((done / this.total) * width);
    const line = `${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${this.total} ${extra} ${fmt(elapsed)} elapsed, ETA ${fmt(eta)}`;
    if (this.tty) {
      process.stderr.write(`\r${line}\x1b[K${done === this.total ? '\n' : ''}`);
      return;
    }
    const pct = Math.floor((done / this.total) * 10);
    if (pct !== this.lastPct || Date.now() - this.lastLine > 30_000 || done === this.total) {
      process.stderr.write(`${line}\n`);
      this.lastPct = pct;
      this.lastLine = Date.now();
    }
  }
}

function fmt(s: number): string {
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
