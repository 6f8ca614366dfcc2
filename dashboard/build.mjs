// Copies the charting library's built files and its licence into the Python package,
// which serves them itself (the dashboard works offline: no CDN).
import { copyFileSync, mkdirSync } from "node:fs";

const target = "../performance_engine/worker/dashboard/static/vendor";
mkdirSync(target, { recursive: true });
for (const [from, to] of [
  ["node_modules/uplot/dist/uPlot.iife.min.js", "uPlot.iife.min.js"],
  ["node_modules/uplot/dist/uPlot.min.css", "uPlot.min.css"],
  ["node_modules/uplot/LICENSE", "uPlot.LICENSE"],
]) {
  copyFileSync(from, `${target}/${to}`);
  console.log(`${from} -> ${target}/${to}`);
}
