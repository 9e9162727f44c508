// A live line chart drawn on a <canvas>: the last `windowSecs` of samples,
// one line per series, a y axis scaled to what is visible. No library: the
// dashboard must work on machines without internet.

/** Rounds up to 1, 2 or 5 times a power of ten, so the axis reads easily. */
function niceCeil(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function label(value) {
  if (value >= 1e6) return `${(value / 1e6).toFixed(value % 1e6 ? 1 : 0)}M`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(value % 1e3 ? 1 : 0)}k`;
  return String(Math.round(value * 100) / 100);
}

export class LineChart {
  /**
   * `series`: `[{ label, color }]`, one value each per sample.
   * `samples`: an array of `{ t, values }` (t in ms) shared with whoever
   * collects them, so the chart shows history gathered before it existed.
   */
  constructor(canvas, { series, samples, windowSecs = 120 }) {
    this.canvas = canvas;
    this.series = series;
    this.samples = samples;
    this.windowMs = windowSecs * 1000;
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(canvas);
  }

  /** Stops following the canvas's size. */
  destroy() {
    this.resize.disconnect();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(canvas);
    const ink = style.getPropertyValue('--chart-ink').trim() || '#667';
    const grid = style.getPropertyValue('--chart-grid').trim() || '#e4e6eb';

    const left = 44;
    const right = 8;
    const top = 8;
    const bottom = 20;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const now = Date.now();
    const since = now - this.windowMs;
    const visible = this.samples.filter((s) => s.t >= since - 1000);
    // What is drawn, for tests and people inspecting the page.
    canvas.dataset.samples = String(visible.length);
    const max = niceCeil(Math.max(0, ...visible.flatMap((s) => s.values.filter(Number.isFinite))));
    const x = (t) => left + ((t - since) / this.windowMs) * plotW;
    const y = (v) => top + plotH - (v / max) * plotH;

    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    ctx.fillStyle = ink;
    ctx.strokeStyle = grid;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    for (let i = 0; i <= 4; i++) {
      const value = (max / 4) * i;
      const py = Math.round(y(value)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, py);
      ctx.lineTo(left + plotW, py);
      ctx.stroke();
      ctx.fillText(label(value), left - 6, py);
    }
    ctx.textBaseline = 'alphabetic';
    ctx.textAlign = 'center';
    const secs = this.windowMs / 1000;
    for (const ago of [secs, secs / 2, 0]) {
      ctx.fillText(ago ? `−${ago} s` : 'now', Math.min(left + plotW - 14, x(now - ago * 1000)), height - 5);
    }

    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, plotW, plotH);
    ctx.clip();
    ctx.lineWidth = 2;
    ctx.lineJoin = 'round';
    this.series.forEach((series, i) => {
      ctx.strokeStyle = series.color;
      ctx.beginPath();
      let started = false;
      for (const sample of visible) {
        const value = sample.values[i];
        if (!Number.isFinite(value)) {
          started = false;
          continue;
        }
        if (started) ctx.lineTo(x(sample.t), y(value));
        else ctx.moveTo(x(sample.t), y(value));
        started = true;
      }
      ctx.stroke();
    });
    ctx.restore();
  }
}
