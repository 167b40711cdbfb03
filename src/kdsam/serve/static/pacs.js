// The PACS panel, shown when the server runs with --dicomweb: the PACS's studies and their series
// (QIDO-RS through /v1/pacs), a series opened as an image or a volume, and "Save to PACS", which
// stores the open volume's label map as a DICOM SEG in its study (STOW-RS). The page passes in what
// the panel needs of it (`page`), so this module knows nothing of objects or the viewport.
"use strict";

const $ = (id) => document.getElementById(id);

// page: {api(path, options), open(label, load), working(promise), labels() -> {volume, body, names} or null}
export function setupPacs(page) {
  $("pacs").hidden = false;
  $("pacs-refresh").addEventListener("click", () => listStudies(page));
  $("save-pacs").addEventListener("click", () => save(page));
  listStudies(page);
}

function say(text, error = false) {
  $("pacs-status").textContent = text;
  $("pacs-status").className = error ? "error" : "";
}

function button(text, title, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (title) b.title = title;
  b.addEventListener("click", action);
  return b;
}

async function listStudies(page) {
  say("Listing studies…");
  try {
    const studies = await page.api("/v1/pacs/studies");
    $("studies").replaceChildren(...studies.map((s) => studyItem(page, s)));
    say(studies.length ? `${studies.length} studies.` : "The PACS holds no studies.");
  } catch (err) {
    say(`Could not list studies: ${err.message}`, true);
  }
}

function studyItem(page, study) {
  const item = document.createElement("li");
  item.dataset.study = study.study_uid;
  const what = [study.patient_name || study.patient_id, study.date, study.description, study.modalities.join("/")];
  const series = document.createElement("ul");
  item.showSeries = async () => {
    try {
      const rows = await page.api(`/v1/pacs/studies/${study.study_uid}/series`);
      series.replaceChildren(...rows.map((r) => seriesItem(page, study, r)));
    } catch (err) {
      say(`Could not list the series: ${err.message}`, true);
    }
  };
  item.append(button(what.filter(Boolean).join(" · ") || study.study_uid, study.study_uid, () =>
    series.childElementCount ? series.replaceChildren() : item.showSeries()), series); // a second click folds it
  return item;
}

function seriesItem(page, study, series) {
  const item = document.createElement("li");
  item.dataset.series = series.series_uid;
  const label = `${series.modality || "?"} ${series.number ?? ""} ${series.description || ""} (${series.instances ?? "?"} images)`;
  const open = button(label.replace(/\s+/g, " "), series.image ? `open ${series.series_uid}` : "not an image series", () =>
    page.open(`${series.modality || "series"} ${series.description || series.series_uid}`, (window) => load(page, study, series, window)));
  open.disabled = !series.image;
  item.append(open);
  return item;
}

// Open the series on the server (WADO-RS there): a volume is then described by /v1/volumes, an image
// session by the open call itself.
async function load(page, study, series, window) {
  const path = `/v1/pacs/studies/${study.study_uid}/series/${series.series_uid}/open?window=${encodeURIComponent(window)}`;
  const opened = await page.api(path, { method: "POST" });
  if (opened.kind === "volume") return page.api(`/v1/volumes/${opened.volume_id}`);
  return { session_id: opened.session_id, width: opened.width, height: opened.height, name: series.series_uid };
}

async function save(page) {
  const labels = await page.labels();
  if (!labels) return say("Save to PACS takes a volume with a mask.", true);
  const query = labels.names.map((n) => `name=${encodeURIComponent(n)}`).join("&");
  say("Storing the SEG…");
  try {
    const stored = await page.working(page.api(`/v1/pacs/volumes/${labels.volume}/seg?${query}`, { method: "POST", body: labels.body }));
    say(`Stored SEG ${stored.sop_instance_uid} (series ${stored.series_instance_uid}; segments ${stored.segments.join(", ")}).`);
    const study = [...$("studies").children].find((li) => li.dataset.study === stored.study_instance_uid);
    if (study) await study.showSeries(); // the new SEG series appears under its study at once
  } catch (err) {
    say(`Save to PACS failed: ${err.message}`, true);
  }
}
