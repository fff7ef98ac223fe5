// Helpers shared by the bundled task pages (served at /static/catp.js).
// The env injects the episode's spec as window.__CATP_SPEC__ before any script runs;
// a page keeps everything its success check needs in window.__CATP_STATE__.
(function () {
  var spec = window.__CATP_SPEC__ || {};
  var state = window.__CATP_STATE__ = window.__CATP_STATE__ || {};
  // h('button', {id: 'x', onclick: fn}, 'text', child, ...) -> element
  function h(tag, attrs) {
    var el = document.createElement(tag);
    attrs = attrs || {};
    Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k.indexOf('on') === 0 && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'style') el.setAttribute('style', v);
      else if (k === 'class') el.className = v;
      else if (k === 'checked' || k === 'value') el[k] = v;
      else el.setAttribute(k, v === true ? '' : v);
    });
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      if (Array.isArray(c)) c.forEach(function (x) { if (x) el.appendChild(typeof x === 'string' ? document.createTextNode(x) : x); });
      else el.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return el;
  }
  function mount(el) {
    var root = document.getElementById('app');
    root.innerHTML = '';
    root.appendChild(el);
  }
  // A drop-down drawn in the page (native <select> pop-ups are not in screenshots).
  // Button #<id> opens a list of options #<id>-opt-<i>; choosing one calls onchange(value).
  function dropdown(id, options, value, placeholder, onchange) {
    var wrap = h('span', {class: 'dd', style: 'position: relative; display: inline-block;'});
    var btn = h('button', {id: id, type: 'button', role: 'combobox', 'aria-expanded': 'false'},
                value || placeholder);
    var list = h('div', {id: id + '-list', role: 'listbox',
      style: 'display: none; position: absolute; z-index: 10; left: 0; top: 100%; background: #fff; border: 1px solid #888; min-width: 140px;'});
    options.forEach(function (opt, i) {
      list.appendChild(h('div', {id: id + '-opt-' + i, role: 'option', 'data-value': opt,
        style: 'padding: 3px 8px; cursor: pointer;',
        onclick: function () {
          btn.textContent = opt; list.style.display = 'none'; btn.setAttribute('aria-expanded', 'false');
          onchange(opt);
        }}, opt));
    });
    btn.addEventListener('click', function () {
      var open = list.style.display === 'none';
      list.style.display = open ? 'block' : 'none';
      btn.setAttribute('aria-expanded', open ? 'true' : 'false');
    });
    wrap.appendChild(btn); wrap.appendChild(list);
    return wrap;
  }
  window.CATP = {spec: spec, state: state, h: h, mount: mount, dropdown: dropdown};
})();
