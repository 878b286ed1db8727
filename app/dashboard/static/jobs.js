// Keeps job rows and the job page current without a reload. API errors are shown, never swallowed.
const FINISHED = ["succeeded", "failed", "cancelled"];

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

function watchJobList() {
  const errorBox = document.getElementById("jobs-error");
  setInterval(async () => {
    try {
      for (const job of await getJSON("/v1/jobs")) {
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
  if (cancel) {
    cancel.addEventListener("click", async () => {
      if (!confirm("Cancel this job? Its partial files are removed.")) return;
      try {
        await getJSON(`/v1/jobs/${jobId}/cancel`, { method: "POST" });
      } catch (error) {
        showError(errorBox, "Cancel failed: " + error.message);
      }
    });
  }
  const timer = setInterval(async () => {
    try {
      const job = await getJSON(`/v1/jobs/${jobId}`);
      document.getElementById("status").textContent = job.status;
      document.getElementById("status").className = "status status-" + job.status;
      document.getElementById("progress").value = job.progress.fraction;
      document.getElementById("stage").textContent = job.progress.stage || "";
      if (FINISHED.includes(job.status)) {
        clearInterval(timer);
        location.reload();
      }
    } catch (error) {
      showError(errorBox, "Could not refresh the job: " + error.message);
    }
  }, 1000);
}
