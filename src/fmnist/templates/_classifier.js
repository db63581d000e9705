// The classifier page's script, shared by the server's page and the exported one. Each page defines, before
// including this, `result`, `bars` and `seen` (its answer panel's elements), `classify(blob)` for a photo and
// `classifyCanvas(canvas, ctx)` for a drawing; this wires the photo and drawing inputs to them and draws the bars.

function showBars(ranked) {  // [[class name, probability], ...], most probable first
  bars.replaceChildren(...ranked.map(([label, probability]) => {
    const li = document.createElement("li"), name = document.createElement("span");
    const track = document.createElement("span"), fill = document.createElement("span");
    const p = document.createElement("span");
    name.textContent = label;
    track.className = "track"; fill.className = "fill"; fill.style.width = (100 * probability).toFixed(1) + "%";
    track.append(fill);
    p.className = "p"; p.textContent = (100 * probability).toFixed(1) + "%";
    li.append(name, track, p);
    return li;
  }));
}

// A photo: chosen, dropped or pasted.
const file = document.getElementById("file"), drop = document.getElementById("drop");
file.addEventListener("change", () => { if (file.files.length) classify(file.files[0]); });
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, e => { e.preventDefault(); drop.classList.add("over"); });
}
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => {
  e.preventDefault(); drop.classList.remove("over");
  const f = [...e.dataTransfer.files].find(f => f.type.startsWith("image/"));
  if (f) classify(f);
});
document.addEventListener("dragover", e => e.preventDefault());  // a missed drop must not open the file
document.addEventListener("drop", e => e.preventDefault());
document.addEventListener("paste", e => {
  const item = [...e.clipboardData.items].find(i => i.type.startsWith("image/"));
  if (item) classify(item.getAsFile());
});

// A drawing: light strokes on black, like Fashion-MNIST's garments.
const canvas = document.getElementById("canvas"), ctx = canvas.getContext("2d", {willReadFrequently: true});
function clear() { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); drawn = false; }
let drawing = false, drawn = false, last = null;
clear();
function point(e) {
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
}
canvas.addEventListener("pointerdown", e => {
  drawing = true; last = point(e); canvas.setPointerCapture(e.pointerId); stroke(e);
});
canvas.addEventListener("pointermove", e => { if (drawing) stroke(e); });
function stroke(e) {
  const p = point(e);
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 22; ctx.lineCap = "round"; ctx.lineJoin = "round";
  ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...p); ctx.stroke();
  last = p; drawn = true;
}
function classifyDrawing() {
  if (!drawn) { result.textContent = "Draw something first."; return; }
  classifyCanvas(canvas, ctx);
}
for (const type of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(type, () => { if (drawing) { drawing = false; classifyDrawing(); } });
}
document.getElementById("classify-drawing").addEventListener("click", classifyDrawing);
document.getElementById("clear").addEventListener("click", () => {
  clear(); result.textContent = "Cleared: draw again."; bars.replaceChildren(); seen.classList.add("hidden");
});
