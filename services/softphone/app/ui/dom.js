// A very small virtual DOM: views are pure functions returning `h()`
// trees (plain objects, testable in Node), and `render()` patches the
// real DOM to match, in place, so focus, caret and scroll survive a
// re-render. Props: attributes (`class`, `data-testid`, `aria-*`…),
// `on*` handlers (set as properties), `value`/`checked` (as properties),
// `key` (a different key replaces the element).

const SVG_NS = 'http://www.w3.org/2000/svg';
const PROPS = new Set(['value', 'checked', 'selected', 'indeterminate']);

export function h(tag, props, ...children) {
  return { tag, props: props ?? {}, children: flatten(children) };
}

function flatten(list, out = []) {
  for (const c of list) {
    if (c === null || c === undefined || c === false || c === true) continue;
    if (Array.isArray(c)) flatten(c, out);
    else if (typeof c === 'object') out.push(c);
    else out.push({ text: String(c) });
  }
  return out;
}

/** Makes `parent`'s children match `vnodes` (a vnode or a list). */
export function render(parent, vnodes) {
  patchChildren(parent, flatten([vnodes]), parent.namespaceURI === SVG_NS ? SVG_NS : null);
}

function create(v, ns) {
  const doc = globalThis.document;
  if ('text' in v) return doc.createTextNode(v.text);
  const childNs = v.tag === 'svg' ? SVG_NS : ns;
  const el = childNs ? doc.createElementNS(childNs, v.tag) : doc.createElement(v.tag);
  setProps(el, v.props, {});
  patchChildren(el, v.children, childNs);
  return el;
}

function same(el, v) {
  if ('text' in v) return el.nodeType === 3;
  return el.nodeType === 1 && el.nodeName.toLowerCase() === v.tag.toLowerCase() && (el.__key ?? null) === (v.props.key ?? null);
}

function patchChildren(parent, vchildren, ns) {
  for (let i = 0; i < vchildren.length; i++) {
    const v = vchildren[i];
    const el = parent.childNodes[i];
    if (!el) {
      parent.appendChild(create(v, ns));
    } else if (!same(el, v)) {
      parent.replaceChild(create(v, ns), el);
    } else if ('text' in v) {
      if (el.nodeValue !== v.text) el.nodeValue = v.text;
    } else {
      const childNs = v.tag === 'svg' ? SVG_NS : ns;
      setProps(el, v.props, el.__props ?? {});
      patchChildren(el, v.children, childNs);
    }
  }
  while (parent.childNodes.length > vchildren.length) parent.removeChild(parent.lastChild);
}

function setProps(el, props, old) {
  for (const k of Object.keys(old)) {
    if (k in props) continue;
    if (k === 'key') continue;
    if (k.startsWith('on')) el[k.toLowerCase()] = null;
    else if (PROPS.has(k)) el[k] = k === 'value' ? '' : false;
    else el.removeAttribute(k === 'className' ? 'class' : k);
  }
  for (const [k, v] of Object.entries(props)) {
    if (k === 'key') {
      el.__key = v;
      continue;
    }
    if (k.startsWith('on')) {
      el[k.toLowerCase()] = typeof v === 'function' ? v : null;
      continue;
    }
    if (PROPS.has(k)) {
      const want = k === 'value' ? String(v ?? '') : !!v;
      if (el[k] !== want) el[k] = want;
      continue;
    }
    const name = k === 'className' ? 'class' : k;
    if (v === false || v === null || v === undefined) {
      if (el.hasAttribute(name)) el.removeAttribute(name);
    } else {
      const s = v === true ? '' : String(v);
      if (el.getAttribute(name) !== s) el.setAttribute(name, s);
    }
  }
  el.__props = props;
}

// ------------------------------------------------------ test helpers

/** Every vnode of a tree, depth first. */
export function walk(v, out = []) {
  for (const n of flatten([v])) {
    out.push(n);
    if (n.children) walk(n.children, out);
  }
  return out;
}

/** The vnode with `data-testid` = id, or null. */
export function byTestId(tree, id) {
  return walk(tree).find((n) => n.props?.['data-testid'] === id) ?? null;
}

/** The text inside a vnode. */
export function textOf(v) {
  return walk(v).filter((n) => 'text' in n).map((n) => n.text).join('');
}
