"""JavaScript run in the page: the visible interactive elements, and the browser's small helpers.

Each element is reported as a dict with ``tag``, ``text``, ``role`` and ``bbox`` (x, y,
width, height in screenshot pixels, clipped to the viewport), plus ``id``, ``value``
and ``checked`` when the element has them. An element counts as visible when its box
meets the viewport, it is not hidden by CSS, and the point at the centre of its visible
part hits the element itself (so covered elements are left out).

The list costs what the viewport holds, not what the document holds: the page is walked from
``body`` down, skipping every subtree whose box lies wholly outside the viewport and entering
long lists of children (more than 32) at the first child that reaches it, by binary search;
at most :data:`MAX_VISITS` elements are looked at. The viewport is then sampled with
``elementFromPoint`` on grids down to :data:`GRID_STEP` CSS pixels, for at most
:data:`GRID_BUDGET_MS`, which adds what the walk could not reach (a fixed-position child of a
skipped box, content that overflows its parent). Text is read from at most a few thousand
characters of an element's text nodes, so a 20 MB text node costs what a short one does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ELEMENTS_JS", "FOCUS_JS", "GRID_BUDGET_MS", "GRID_STEP", "INTERACTIVE_SELECTOR", "LOCATE_JS", "MAX_ELEMENTS",
           "MAX_VISITS", "SCROLL_JS", "SETTLE_JS", "normalise_elements"]

MAX_ELEMENTS = 1000
"""At most this many elements are listed (a hostile page may have millions)."""
MAX_VISITS = 5_000
"""At most this many elements are looked at by the walk, whatever the size of the page."""
GRID_STEP = 32
"""Spacing in CSS pixels of the finest grid of points sampled with ``elementFromPoint``."""
GRID_BUDGET_MS = 15
"""Time the sampling may take per extraction (coarse grid first); on a small page it finishes
in a few milliseconds, inside a block of 10,000 children it reaches a few dozen points."""

INTERACTIVE_SELECTOR = ", ".join(
    [
        "a[href]", "button", "input:not([type=hidden])", "select", "textarea", "summary",
        "label", "[onclick]", "[contenteditable=true]", "[tabindex]:not([tabindex='-1'])",
        "[role=button]", "[role=link]", "[role=tab]", "[role=menuitem]", "[role=option]",
        "[role=checkbox]", "[role=radio]", "[role=switch]", "[role=combobox]", "[role=textbox]",
        "[role=listitem]",
    ]
)
"""CSS selector for elements an agent can act on."""

ELEMENTS_JS = r"""
([selector, dsf, extraSelector, maxText, maxItems, maxVisits, gridStep, gridBudgetMs]) => {
  const W = window.innerWidth, H = window.innerHeight;
  const implicit = (el) => {
    const tag = el.tagName.toLowerCase();
    const type = (el.getAttribute('type') || '').toLowerCase();
    if (tag === 'a') return 'link';
    if (tag === 'button' || tag === 'summary') return 'button';
    if (tag === 'select') return 'combobox';
    if (tag === 'textarea') return 'textbox';
    if (tag === 'input') {
      if (['checkbox', 'radio'].includes(type)) return type;
      if (['button', 'submit', 'reset', 'image'].includes(type)) return 'button';
      return 'textbox';
    }
    return '';
  };
  const outside = (r) => r.bottom < 0 || r.top > H || r.right < 0 || r.left > W;
  // Text of an element, read from at most LONG characters of its text nodes: innerText (which
  // lays out the whole subtree) only for elements with less text than that.
  const LONG = 4 * maxText + 1000;
  const textOf = (el) => {
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    let parts = [], size = 0, node;
    while ((node = walker.nextNode()) && size < LONG) {
      const parent = node.parentElement;
      if (parent && /^(SCRIPT|STYLE|NOSCRIPT|TEMPLATE)$/.test(parent.tagName)) continue;
      parts.push(node.data.slice(0, LONG - size));
      size += node.data.length;
    }
    if (size < LONG) return el.innerText || el.textContent || '';
    return parts.join(' ');
  };
  // 1. Walk the tree, skipping what lies outside the viewport. A subtree is skipped when its
  // root's box is wholly outside (and not empty: an empty box may hold positioned children);
  // a long list of children laid out top to bottom is entered at the first one that reaches
  // the viewport (binary search) and left after RUN children below it. At most maxVisits
  // elements are looked at; step 2 catches what this misses (fixed-position or overflowing
  // children of a skipped box, what lies past the budget).
  const RUN = 8, LONG_LIST = 32;
  const matched = [], extras = [], seenMatch = new Set(), extraSet = new Set();
  let visits = 0;
  const consider = (el) => {
    if (el.matches(selector)) { matched.push(el); seenMatch.add(el); }
    else if (extraSelector && el.matches(extraSelector) && el.children.length === 0) { extras.push(el); extraSet.add(el); }
  };
  const firstReaching = (kids) => {
    let lo = 0, hi = kids.length - 1;
    const top = (i) => kids[i].getBoundingClientRect().top;
    if (!(top(0) <= top(hi >> 1) && top(hi >> 1) <= top(hi))) return 0;  // not top-to-bottom
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      visits++;
      if (kids[mid].getBoundingClientRect().bottom < 0) lo = mid + 1; else hi = mid;
    }
    return Math.max(0, lo - RUN);
  };
  // Depth first with an explicit stack (a page may nest elements deeper than JS recursion goes).
  const enter = (parent) => {
    const kids = parent.children, long = kids.length > LONG_LIST;
    return {kids: kids, i: long ? firstReaching(kids) : 0, long: long, below: 0};
  };
  if (document.body) {
    if (document.body.matches(selector)) { matched.push(document.body); seenMatch.add(document.body); }
    const stack = [enter(document.body)];
    while (stack.length && visits < maxVisits) {
      const top = stack[stack.length - 1];
      if (top.i >= top.kids.length) { stack.pop(); continue; }
      const el = top.kids[top.i++];
      visits++;
      const r = el.getBoundingClientRect();
      const empty = r.width === 0 || r.height === 0;
      if (!empty && outside(r)) {
        if (top.long && r.top > H && ++top.below >= RUN) top.i = top.kids.length;
        continue;
      }
      top.below = 0;
      if (!empty) consider(el);
      if (el.children.length) stack.push(enter(el));
    }
  }
  // 2. Sample the viewport with elementFromPoint, coarse grid first, for at most gridBudgetMs:
  // the interactive element at each point, when the walk did not reach it. (A hit test costs
  // what the blocks under the point hold: about 1 us on a small page, milliseconds inside a
  // block of 10,000 children, hence a time budget rather than a count.)
  const deadline = performance.now() + gridBudgetMs;
  sampling: for (let s = gridStep * 8; s >= gridStep; s /= 2) {
    for (let y = s / 2; y < H; y += s) {
      for (let x = s / 2; x < W; x += s) {
        if (performance.now() > deadline) break sampling;
        const hit = document.elementFromPoint(x, y);
        const el = hit && hit.closest ? hit.closest(selector) : null;
        if (el && !seenMatch.has(el)) { matched.push(el); seenMatch.add(el); }
      }
    }
  }
  if (matched.length > 1) matched.sort((a, b) => a === b ? 0 :
    (a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1));
  const seen = new Set();
  const out = [];
  for (const el of [...matched, ...extras]) {
    if (out.length >= maxItems) break;
    if (seen.has(el)) continue;
    seen.add(el);
    const r = el.getBoundingClientRect();
    if (r.width <= 0 || r.height <= 0) continue;
    const x0 = Math.max(0, r.left), y0 = Math.max(0, r.top);
    const x1 = Math.min(W, r.right), y1 = Math.min(H, r.bottom);
    if (x1 - x0 < 1 || y1 - y0 < 1) continue;
    if (extraSet.has(el) && !(textOf(el).trim())) continue;
    const st = getComputedStyle(el);
    if (st.visibility === 'hidden' || st.display === 'none' || parseFloat(st.opacity) === 0) continue;
    const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
    const hit = document.elementFromPoint(cx, cy);
    if (!hit || !(hit === el || el.contains(hit) || (hit.control && hit.control === el)
                  || (el.labels && Array.from(el.labels).includes(hit)))) continue;
    let text = '';
    const tag = el.tagName.toLowerCase();
    if (tag === 'input' || tag === 'textarea' || tag === 'select') {
      text = el.value || el.getAttribute('placeholder') || el.getAttribute('aria-label') || '';
    } else {
      text = (textOf(el) || el.getAttribute('aria-label') || '');
    }
    text = text.slice(0, LONG).replace(/\s+/g, ' ').trim().slice(0, maxText);
    const item = {
      tag: tag,
      text: text,
      role: el.getAttribute('role') || implicit(el),
      bbox: [Math.round(x0 * dsf), Math.round(y0 * dsf),
             Math.max(1, Math.round((x1 - x0) * dsf)), Math.max(1, Math.round((y1 - y0) * dsf))],
    };
    if (el.id) item.id = el.id;
    if (tag === 'input' || tag === 'textarea' || tag === 'select') item.value = String(el.value).slice(0, 1000);
    if (el.type === 'checkbox' || el.type === 'radio') item.checked = !!el.checked;
    else if (el.hasAttribute('aria-checked')) item.checked = el.getAttribute('aria-checked') === 'true';
    out.push(item);
  }
  return out;
}
"""

LOCATE_JS = r"""
([selector, dsf]) => {
  const el = document.querySelector(selector);
  if (!el) return null;
  const r = el.getBoundingClientRect();
  const st = getComputedStyle(el);
  if (r.width <= 0 || r.height <= 0 || st.visibility === 'hidden' || st.display === 'none') return null;
  const W = window.innerWidth, H = window.innerHeight;
  const x0 = Math.max(0, r.left), y0 = Math.max(0, r.top);
  const x1 = Math.min(W, r.right), y1 = Math.min(H, r.bottom);
  let dy = 0;
  if (y1 - y0 < Math.min(r.height, 4) || y1 - y0 < 1) {
    dy = r.top < 0 ? r.top - 20 : r.bottom - H + 20;
    return {x: null, y: null, dy: Math.round(dy * dsf)};
  }
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const hit = document.elementFromPoint(cx, cy);
  const visible = !!hit && (hit === el || el.contains(hit) || hit.contains(el));
  return {x: Math.round(cx * dsf), y: Math.round(cy * dsf), dy: 0, visible: visible};
}
"""
"""Where an element is, for oracles: its centre in screenshot pixels, or how far to scroll."""


SETTLE_JS = "() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))"
"""Resolves once a frame has rendered (the browser's wait after each action)."""
FOCUS_JS = """() => { const a = document.activeElement;
  return !!a && a !== document.body && a !== document.documentElement; }"""
"""Whether an element has keyboard focus (``type`` needs one)."""
SCROLL_JS = r"""([x, y, dx, dy]) => {
  let el = document.elementFromPoint(x, y);
  while (el && el !== document.body && el !== document.documentElement) {
    const st = getComputedStyle(el);
    const can = /(auto|scroll)/.test(st.overflowY + st.overflowX) &&
      (el.scrollHeight > el.clientHeight || el.scrollWidth > el.clientWidth);
    if (can) { el.scrollBy({left: dx, top: dy, behavior: 'instant'}); return; }
    el = el.parentElement;
  }
  window.scrollBy({left: dx, top: dy, behavior: 'instant'});
}"""
"""Scroll the innermost scrollable element under (x, y) by (dx, dy) CSS pixels, else the window."""


def normalise_elements(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn the page's answer into plain dicts whose ``bbox`` is an int 4-tuple."""
    out = []
    for item in raw or []:
        item = dict(item)
        item["bbox"] = tuple(int(v) for v in item["bbox"])
        out.append(item)
    return out
