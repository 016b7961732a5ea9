// Helpers shared by every nca_widgets view. The Python side prepends this file to each view's
// module: anywidget loads each view as one self-contained module.

// The bytes of a binary trait as it arrives (DataView, ArrayBuffer or typed array).
function bytesOf(value) {
  if (!value) return new Uint8Array(0);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return new Uint8Array(0);
}

// A typed array over a copy: a received buffer's offset need not be a multiple of its size.
function typed(value, Ctor = Float32Array) {
  const b = bytesOf(value).slice();
  return new Ctor(b.buffer, 0, Math.floor(b.byteLength / Ctor.BYTES_PER_ELEMENT));
}

function el_(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}
