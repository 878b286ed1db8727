// Upload form and list shared by the models and datasets pages: one <section class="uploads"> drives it.
// Uploads use XMLHttpRequest, the one browser API that reports bytes sent and can abort mid-way.
(function () {
  const section = document.querySelector("section.uploads");
  const endpoint = section.dataset.endpoint;
  const noun = section.dataset.noun;
  const columns = JSON.parse(section.dataset.columns);
  const form = section.querySelector(".upload-form");
  const fileInput = document.getElementById("upload-file");
  const nameInput = document.getElementById("upload-name");
  const submit = document.getElementById("upload-submit");
  const cancel = document.getElementById("upload-cancel");
  const progress = document.getElementById("upload-progress");
  const bytes = document.getElementById("upload-bytes");
  const errorBox = document.getElementById("upload-error");
  const statusBox = document.getElementById("upload-status");
  const dropzone = section.querySelector("[data-dropzone]");
  const tbody = section.querySelector("#items tbody");
  let xhr = null;

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    statusBox.textContent = "";
  }

  function clearMessages() {
    errorBox.hidden = true;
    errorBox.textContent = "";
    statusBox.textContent = "";
  }

  // The server's own words: every 4xx carries {detail, errors}.
  function detailOf(status, text) {
    try {
      const body = JSON.parse(text);
      if (body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (ignored) { /* not JSON: fall through */ }
    return `The server answered ${status}.`;
  }

  function megabytes(n) { return (n / 1e6).toFixed(1) + " MB"; }

  function cell(item, column) {
    const td = document.createElement("td");
    const value = item[column.key];
    if (value === null || value === undefined) td.textContent = "—";
    else if (column.format === "count") { td.className = "num"; td.textContent = Number(value).toLocaleString("en-US"); }
    else if (column.format === "label_link") {
      const link = document.createElement("a");
      link.href = `/datasets/${encodeURIComponent(value)}/label`;
      link.textContent = "Label rows";
      td.appendChild(link);
    }
    else if (column.format === "megabytes") { td.className = "num"; td.textContent = megabytes(value); }
    else if (column.format === "hash") {
      td.className = "wide";
      const code = document.createElement("code");
      code.title = value;
      code.textContent = value.slice(0, 16) + "…";
      td.appendChild(code);
    } else if (column.format === "list") td.textContent = value.join(", ");
    else td.textContent = value;
    return td;
  }

  function render(items) {
    tbody.replaceChildren();
    if (!items.length) {
      const row = tbody.insertRow();
      row.className = "empty";
      const td = row.insertCell();
      td.colSpan = columns.length + 1;
      td.textContent = `No ${noun}s yet.`;
      return;
    }
    for (const item of items) {
      const row = tbody.insertRow();
      row.dataset.id = item.id;
      row.dataset.name = item.name;
      for (const column of columns) row.appendChild(cell(item, column));
      const td = row.insertCell();
      const button = document.createElement("button");
      button.type = "button";
      button.className = "danger";
      button.dataset.delete = "";
      button.setAttribute("aria-label", `Delete ${item.name}`);
      button.textContent = "Delete";
      td.appendChild(button);
    }
  }

  // Every page of the list, following next_cursor.
  async function refresh() {
    const items = [];
    let url = `${endpoint}?limit=200`;
    while (url) {
      const response = await fetch(url);
      if (!response.ok) throw new Error(detailOf(response.status, await response.text()));
      const page = await response.json();
      items.push(...page.items);
      url = page.next_cursor ? `${endpoint}?limit=200&cursor=${encodeURIComponent(page.next_cursor)}` : null;
    }
    render(items);
  }

  function finish() {
    xhr = null;
    submit.disabled = false;
    cancel.hidden = true;
  }

  function upload() {
    clearMessages();
    const file = fileInput.files[0];
    if (!file) {
      showError("Choose a file first.");
      fileInput.focus();
      return;
    }
    const data = new FormData();
    data.append("name", nameInput.value.trim() || file.name);
    data.append("file", file);
    xhr = new XMLHttpRequest();
    xhr.open("POST", endpoint);
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      progress.value = event.loaded / event.total;
      bytes.textContent = `${megabytes(event.loaded)} of ${megabytes(event.total)}`;
    });
    xhr.addEventListener("load", async () => {
      const request = xhr;
      finish();
      if (request.status === 201) {
        const item = JSON.parse(request.responseText);
        form.reset();
        progress.value = 1;
        try {
          await refresh();
          statusBox.textContent = `Uploaded ${item.name}.`;
        } catch (error) {
          showError("Uploaded, but the list could not be refreshed: " + error.message);
        }
      } else {
        progress.value = 0;
        showError("Upload refused: " + detailOf(request.status, request.responseText));
      }
    });
    xhr.addEventListener("error", () => { finish(); showError("The upload failed: the server could not be reached."); });
    xhr.addEventListener("abort", () => {
      finish();
      progress.value = 0;
      bytes.textContent = "";
      statusBox.textContent = "Upload cancelled.";
    });
    submit.disabled = true;
    cancel.hidden = false;
    progress.value = 0;
    xhr.send(data);
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); upload(); });
  cancel.addEventListener("click", () => { if (xhr) xhr.abort(); });

  for (const type of ["dragenter", "dragover"]) {
    dropzone.addEventListener(type, (event) => { event.preventDefault(); dropzone.classList.add("dragging"); });
  }
  for (const type of ["dragleave", "drop"]) {
    dropzone.addEventListener(type, () => dropzone.classList.remove("dragging"));
  }
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (!event.dataTransfer.files.length) return;
    fileInput.files = event.dataTransfer.files;
    statusBox.textContent = `Chosen: ${event.dataTransfer.files[0].name}. Press Upload.`;
  });

  tbody.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-delete]");
    if (!button) return;
    const row = button.closest("tr");
    if (!confirm(`Delete the ${noun} "${row.dataset.name}"? This cannot be undone.`)) return;
    clearMessages();
    try {
      const response = await fetch(`${endpoint}/${encodeURIComponent(row.dataset.id)}`, { method: "DELETE" });
      if (!response.ok) throw new Error(detailOf(response.status, await response.text()));
      await refresh();
      // Announced once the list shows it, so what a screen reader hears matches what is on screen.
      statusBox.textContent = `Deleted ${row.dataset.name}.`;
    } catch (error) {
      showError("Delete failed: " + error.message);
    }
  });
})();
