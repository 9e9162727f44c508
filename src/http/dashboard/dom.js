// Small helpers the pages share: building elements (no framework, no
// templates: text always goes in as text, never as HTML, so nothing a
// client sent can become markup), formatting numbers and times, toasts.

/**
 * An element: `h('button', { class: 'x', onclick: fn, disabled: true }, 'Save')`.
 * Props starting with `on` are listeners, `class` and `text` are shortcuts,
 * `dataset` sets data-* attributes, anything else is an attribute (skipped
 * when `false`, `null` or `undefined`). Children are nodes, strings, numbers
 * or arrays of them; `null` and `false` are skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'value') el.value = value;
    else if (key === 'checked') el.checked = Boolean(value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** 1234567 → "1,234,567"; null → "–". */
export function num(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

/** Microseconds as milliseconds, "0.42 ms". */
export function micros(us) {
  if (us === null || us === undefined) return '–';
  const ms = us / 1000;
  return `${ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : num(ms)} ms`;
}

/** Bytes in KiB/MiB. */
export function bytes(n) {
  if (n === null || n === undefined) return '–';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** Seconds as "3 d 4 h", "5 min 2 s". */
export function duration(secs) {
  if (secs === null || secs === undefined) return '–';
  const d = Math.floor(secs / 86400);
  const hrs = Math.floor((secs % 86400) / 3600);
  const min = Math.floor((secs % 3600) / 60);
  const s = Math.floor(secs % 60);
  if (d) return `${d} d ${hrs} h`;
  if (hrs) return `${hrs} h ${min} min`;
  if (min) return `${min} min ${s} s`;
  return `${s} s`;
}

/** An RFC 3339 time as local "HH:MM:SS" (with the date when not today). */
export function time(iso) {
  if (!iso) return '–';
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return String(iso);
  const clock = at.toLocaleTimeString('en-GB', { hour12: false });
  return at.toDateString() === new Date().toDateString() ? clock : `${at.toISOString().slice(0, 10)} ${clock}`;
}

/** How long ago an RFC 3339 time was, "12 s ago". */
export function ago(iso) {
  const at = new Date(iso).getTime();
  if (!iso || Number.isNaN(at)) return '–';
  return `${duration(Math.max(0, (Date.now() - at) / 1000))} ago`;
}

/** A status badge: `up`, `down`, `disabled`, `unknown`, `available`, … (the class follows the word). */
export function badge(status, text = status) {
  return h('span', { class: `badge badge-${String(status).replace(/[^a-z_-]/gi, '')}` }, text);
}

/**
 * A button that asks once more before it acts: the first click turns it
 * into "`confirm`?" for a few seconds, the second runs `act`.
 */
export function confirmButton(label, confirm, act, props = {}) {
  let armed = null;
  const button = h('button', { type: 'button', ...props }, label);
  button.addEventListener('click', async () => {
    if (!armed) {
      button.textContent = confirm;
      button.classList.add('armed');
      armed = setTimeout(() => {
        armed = null;
        button.textContent = label;
        button.classList.remove('armed');
      }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.disabled = true;
    try {
      await act();
    } finally {
      button.disabled = false;
      button.textContent = label;
      button.classList.remove('armed');
    }
  });
  return button;
}

/** A short message in the corner: `kind` is `info` or `error`. */
export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const item = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 8000 : 4000);
}

/** A titled panel: `panel('Nodes', body...)`. */
export function panel(title, ...children) {
  return h('section', { class: 'panel' }, title ? h('h2', {}, title) : null, ...children);
}

/** A table from column titles and rows of cells; `empty` is shown when there are no rows. */
export function table(columns, rows, empty = 'Nothing here.') {
  if (!rows.length) return h('p', { class: 'muted empty' }, empty);
  return h(
    'table',
    {},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', {}, c)))),
    h('tbody', {}, rows),
  );
}

/**
 * Runs `fn` now and then `ms` after each run has finished (never two at
 * once, so a slow server is not asked faster than it answers); returns a
 * function that stops it.
 */
export function repeat(fn, ms) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    try {
      await fn();
    } finally {
      if (!stopped) timer = setTimeout(run, ms);
    }
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
