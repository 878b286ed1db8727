// Keeps job rows and the job page current without a reload. API errors are shown, never swallowed.
const FINISHED = ["succeeded", "failed", "cancelled", "timed_out"];

function showError(element, message) {
  element.textContent = message;
  element.hidden = false;
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `${url} answered ${response.status}`);
  return body;
}

async function cancelJob(jobId, errorBox) {
  if (!confirm("Cancel this job? Its partial files are removed.")) return;
  try {
    await getJSON(`/v1/jobs/${jobId}/cancel`, { method: "POST" });
  } catch (error) {
    showError(errorBox, "Cancel failed: " + error.message);
  }
}

function watchJobList() {
  const errorBox = document.getElementById("jobs-error");
  document.getElementById("jobs").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-cancel]");
    if (button) cancelJob(button.dataset.cancel, errorBox);
  });
  setInterval(async () => {
    try {
      // The rows shown are the newest jobs, so the first page covers them.
      for (const job of (await getJSON("/v1/jobs?limit=50")).items) {
        const row = document.querySelector(`tr[data-job-id="${job.id}"]`);
        if (!row) continue;
        const status = row.querySelector(".status");
        if (status.textContent !== job.status && FINISHED.includes(job.status)) location.reload();
        status.textContent = job.status;
        status.className = "status status-" + job.status;
        row.querySelector("progress").value = job.progress.fraction;
        row.querySelector(".stage").textContent = job.progress.stage || "";
      }
      errorBox.hidden = true;
    } catch (error) {
      showError(errorBox, "Could not refresh the jobs: " + error.message);
    }
  }, 2000);
}

function watchJob(jobId) {
  const errorBox = document.getElementById("job-error");
  const cancel = document.getElementById("cancel");
  if (cancel) cancel.addEventListener("click", () => cancelJob(jobId, errorBox));
  const log = document.getElementById("log");
  const timer = setInterval(async () => {
    try {
      const job = await getJSON(`/v1/jobs/${jobId}`);
      document.getElementById("status").textContent = job.status;
      document.getElementById("status").className = "status status-" + job.status;
      document.getElementById("progress").value = job.progress.fraction;
      document.getElementById("stage").textContent = job.progress.stage || "";
      showSteps(job.progress.steps);
      await appendLog(jobId, log);
      if (FINISHED.includes(job.status)) {
        clearInterval(timer);
        location.reload();
      }
    } catch (error) {
      showError(errorBox, "Could not refresh the job: " + error.message);
    }
  }, 1000);
}

function showSteps(steps) {
  for (const step of steps) {
    const cell = document.querySelector(`#steps tr[data-step="${step.index}"] .step-state`);
    if (!cell) continue;
    cell.textContent = step.state;
    cell.className = "step-state state-" + step.state.replace(" ", "-");
  }
}

// Adds the lines written since the last call, and keeps the view at the bottom if it was there.
async function appendLog(jobId, log) {
  const page = await getJSON(`/v1/jobs/${jobId}/logs?after=${log.dataset.after}`);
  if (!page.lines.length) return;
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  for (const line of page.lines) {
    const span = document.createElement("span");
    span.className = "log-" + line.source;
    const time = new Date(line.created_at).toISOString().slice(11, 19);
    span.textContent = `[${time} #${line.attempt} ${line.source}] ${line.message}`;
    log.append(span, "\n");
  }
  log.dataset.after = page.next_after;
  if (atBottom) log.scrollTop = log.scrollHeight;
}

// A goal job's candidates: any of them runs again as an ordinary job, on the same model, data and target.
function enableReruns() {
  const section = document.getElementById("search");
  if (!section) return;
  const job = JSON.parse(section.dataset.job);
  const errorBox = document.getElementById("rerun-error");
  section.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-rerun]");
    if (!button) return;
    button.disabled = true;
    try {
      const body = { ...job, recipe: JSON.parse(button.dataset.rerun) };
      if (!body.dataset_id) delete body.dataset_id;
      const created = await getJSON("/v1/jobs", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      location.assign(`/jobs/${created.id}`);
    } catch (error) {
      showError(errorBox, "Could not start the job: " + error.message);
      button.disabled = false;
    }
  });
}
