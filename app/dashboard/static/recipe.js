// The new-job form: a recipe builder generated from GET /v1/techniques, kept in sync with a JSON or
// YAML textarea, submitted with POST /v1/jobs; a 422's errors[].loc are shown beside the fields they name.
(function () {
  const stepsList = document.getElementById("steps");
  const techniqueSelect = document.getElementById("add-technique");
  const textBox = document.getElementById("recipe-text");
  const textError = document.getElementById("recipe-text-error");
  const formError = document.getElementById("form-error");
  const form = document.getElementById("job-form");
  let techniques = {};
  let recipe = { steps: [] };

  // pydantic writes `X | None` as anyOf [X, null]: the field is the X.
  function unwrap(schema) {
    if (schema.anyOf) return { ...schema, ...schema.anyOf.find((s) => s.type !== "null"), anyOf: undefined };
    return schema;
  }

  function choices(schema) {
    if (schema.enum) return schema.enum;
    if (schema.const !== undefined) return [schema.const];
    return null;
  }

  // The technique's first example when it has one (e.g. low_rank needs one of two optional params),
  // plus every required param's default.
  function initialParams(technique) {
    const schema = techniques[technique].params_schema;
    const params = structuredClone((schema.examples || [])[0] || {});
    for (const key of schema.required || []) {
      const field = unwrap(schema.properties[key]);
      const options = choices(field);
      if (field.default !== undefined) params[key] = field.default;
      else if (options) params[key] = options[0];
    }
    return params;
  }

  function textFormat() {
    return document.querySelector('input[name="recipe-format"]:checked').value;
  }

  // js-yaml's default schema (vendor/js-yaml.min.js) refuses tags that would build code objects.
  function writeText() {
    textBox.value = textFormat() === "yaml" ? jsyaml.dump(recipe) : JSON.stringify(recipe, null, 2);
    textError.textContent = "";
  }

  function setParam(index, key, value) {
    const params = recipe.steps[index].params;
    if (value === undefined) delete params[key];
    else params[key] = value;
    writeText();
  }

  function fieldFor(index, key, raw, params) {
    const schema = unwrap(raw);
    const id = `step-${index}-${key}`;
    const wrapper = document.createElement("div");
    wrapper.className = "field param";
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = schema.title || key;
    const help = document.createElement("small");
    help.id = `${id}-help`;
    help.textContent = (schema.description || "") + (schema.default !== undefined ? ` Default: ${JSON.stringify(schema.default)}.` : "");
    const error = document.createElement("span");
    error.className = "field-error";
    error.id = `${id}-error`;
    const value = key in params ? params[key] : schema.default;
    const options = choices(schema);
    let input;
    if (options) {
      input = document.createElement("select");
      for (const option of options) input.add(new Option(String(option), String(option), false, option === value));
      input.addEventListener("change", () => setParam(index, key, options.find((o) => String(o) === input.value)));
    } else if (schema.type === "boolean") {
      input = document.createElement("input");
      input.type = "checkbox";
      input.checked = Boolean(value);
      input.addEventListener("change", () => setParam(index, key, input.checked));
      wrapper.classList.add("checkbox");
    } else if (schema.type === "array" && schema.items && choices(unwrap(schema.items))) {
      const group = document.createElement("fieldset");
      group.id = id;
      group.setAttribute("aria-describedby", `${help.id} ${error.id}`);
      const legend = document.createElement("legend");
      legend.textContent = schema.title || key;
      group.appendChild(legend);
      const selected = new Set(value || []);
      for (const option of choices(unwrap(schema.items))) {
        const boxId = `${id}-${option}`;
        const box = document.createElement("input");
        box.type = "checkbox";
        box.id = boxId;
        box.value = option;
        box.checked = selected.has(option);
        const boxLabel = document.createElement("label");
        boxLabel.htmlFor = boxId;
        boxLabel.textContent = option;
        box.addEventListener("change", () => {
          const chosen = [...group.querySelectorAll("input:checked")].map((b) => b.value);
          setParam(index, key, chosen.length ? chosen : undefined);
        });
        const item = document.createElement("span");
        item.className = "choice";
        item.append(box, " ", boxLabel);
        group.appendChild(item);
      }
      wrapper.append(group, help, error);
      return wrapper;
    } else if (schema.type === "number" || schema.type === "integer") {
      input = document.createElement("input");
      input.type = "number";
      input.step = schema.type === "integer" ? "1" : "any";
      const min = schema.minimum ?? schema.exclusiveMinimum;
      const max = schema.maximum ?? schema.exclusiveMaximum;
      if (min !== undefined) input.min = min;
      if (max !== undefined) input.max = max;
      if (value !== undefined && value !== null) input.value = value;
      input.addEventListener("input", () => setParam(index, key, input.value === "" ? undefined : Number(input.value)));
    } else {
      input = document.createElement("input");
      input.type = "text";
      if (value !== undefined && value !== null) input.value = value;
      input.addEventListener("input", () => setParam(index, key, input.value === "" ? undefined : input.value));
    }
    input.id = id;
    input.setAttribute("aria-describedby", `${help.id} ${error.id}`);
    if (input.type === "checkbox") wrapper.append(input, " ", label, help, error);
    else wrapper.append(label, input, help, error);
    return wrapper;
  }

  function moveStep(index, offset) {
    const [step] = recipe.steps.splice(index, 1);
    recipe.steps.splice(index + offset, 0, step);
    changed(`step-${index + offset}-up`);
  }

  function stepButton(text, label, id, onClick, disabled) {
    const button = document.createElement("button");
    button.type = "button";
    button.id = id;
    button.textContent = text;
    button.setAttribute("aria-label", label);
    button.disabled = disabled;
    button.addEventListener("click", onClick);
    return button;
  }

  function renderSteps() {
    stepsList.replaceChildren();
    recipe.steps.forEach((step, index) => {
      const item = document.createElement("li");
      item.className = "step";
      const heading = document.createElement("h3");
      heading.id = `step-${index}-heading`;
      heading.textContent = `Step ${index + 1}: ${step.technique}`;
      const error = document.createElement("span");
      error.className = "field-error";
      error.id = `step-${index}-technique-error`;
      const where = `step ${index + 1}`;
      const buttons = document.createElement("p");
      buttons.className = "step-buttons";
      buttons.append(
        stepButton("↑ Up", `Move ${where} up`, `step-${index}-up`, () => moveStep(index, -1), index === 0),
        stepButton("↓ Down", `Move ${where} down`, `step-${index}-down`, () => moveStep(index, 1), index === recipe.steps.length - 1),
        stepButton("Remove", `Remove ${where}`, `step-${index}-remove`, () => { recipe.steps.splice(index, 1); changed(); }, false),
      );
      buttons.lastChild.className = "danger";
      item.append(heading, buttons, error);
      const technique = techniques[step.technique];
      if (!technique) {
        error.textContent = `Unknown technique "${step.technique}"; known: ${Object.keys(techniques).join(", ")}.`;
      } else {
        const description = document.createElement("p");
        description.className = "help";
        description.textContent = technique.description;
        item.appendChild(description);
        for (const [key, schema] of Object.entries(technique.params_schema.properties || {})) {
          item.appendChild(fieldFor(index, key, schema, step.params || (step.params = {})));
        }
      }
      stepsList.appendChild(item);
    });
  }

  function changed(focusId) {
    renderSteps();
    writeText();
    if (focusId && document.getElementById(focusId) && !document.getElementById(focusId).disabled) {
      document.getElementById(focusId).focus();
    }
  }

  function addStep() {
    const technique = techniqueSelect.value;
    recipe.steps.push({ technique, params: initialParams(technique) });
    changed(`step-${recipe.steps.length - 1}-remove`);
  }

  textBox.addEventListener("input", () => {
    const format = textFormat();
    let parsed;
    try {
      parsed = format === "yaml" ? jsyaml.load(textBox.value) : JSON.parse(textBox.value);
    } catch (error) {
      textError.textContent = `Not valid ${format.toUpperCase()} yet: ` + error.message;
      return;
    }
    if (!parsed || !Array.isArray(parsed.steps) || parsed.steps.some((s) => !s || typeof s.technique !== "string")) {
      textError.textContent = "A recipe is a list of steps, each with a technique and its params: "
        + (format === "yaml" ? "steps: [{technique: …, params: {…}}]" : '{"steps": [{"technique": …, "params": {…}}]}');
      return;
    }
    textError.textContent = "";
    recipe = parsed;
    renderSteps();
  });

  // Switching the format rewrites the text from the last recipe that parsed.
  for (const radio of document.querySelectorAll('input[name="recipe-format"]')) {
    radio.addEventListener("change", writeText);
  }

  // Preset buttons from GET /v1/recipes/presets; a preset for one kind of model shows for that kind only.
  const presetBox = document.getElementById("preset-buttons");
  const modelSelect = document.getElementById("model_id");
  const targetSelect = document.getElementById("target");

  function showPresetsForModel() {
    const task = modelSelect.selectedOptions[0] ? modelSelect.selectedOptions[0].dataset.task : undefined;
    for (const button of presetBox.querySelectorAll("button.preset")) {
      button.hidden = Boolean(task && button.dataset.task && button.dataset.task !== task);
    }
  }

  function addPresets(presets) {
    for (const preset of presets) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "preset";
      button.textContent = preset.name;
      button.title = preset.summary;
      if (preset.task) button.dataset.task = preset.task;
      button.addEventListener("click", () => {
        recipe = structuredClone(preset.recipe);
        targetSelect.value = `${preset.target.runtime}/${preset.target.device}`;
        changed();
      });
      presetBox.append(button, " ");
    }
    showPresetsForModel();
  }
  modelSelect.addEventListener("change", showPresetsForModel);

  // A causal LM's goal reads perplexity and ships an llm_quantize checkpoint for torch: while the goal's
  // fields and the target still hold the page's defaults, choosing one sets those instead.
  const fidelityField = document.getElementById("goal-min_fidelity");
  const perplexityField = document.getElementById("goal-max_perplexity_increase");
  function goalDefaultsForModel() {
    const task = modelSelect.selectedOptions[0] ? modelSelect.selectedOptions[0].dataset.task : undefined;
    if (task !== "text-generation") return;
    if (fidelityField.value === fidelityField.defaultValue && perplexityField.value === "") {
      fidelityField.value = "";
      perplexityField.value = "0.01";
    }
    if (targetSelect.value === "onnxruntime/cpu") targetSelect.value = "torch/cpu";
  }
  modelSelect.addEventListener("change", goalDefaultsForModel);
  goalDefaultsForModel();

  // A recipe, or a goal the search works from: the form shows the one chosen.
  function mode() {
    return document.querySelector('input[name="mode"]:checked').value;
  }
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => {
      document.getElementById("goal-form").hidden = mode() !== "goal";
      document.getElementById("recipe-builder").hidden = mode() !== "recipe";
    });
  }

  const GOAL_NUMBERS = ["min_fidelity", "max_accuracy_drop", "max_perplexity_increase", "max_size_ratio", "max_latency_ms", "latency_batch_size",
    "budget_minutes", "max_candidates"];
  function goalFromForm() {
    const goal = { objective: document.getElementById("goal-objective").value };
    for (const key of GOAL_NUMBERS) {
      const raw = document.getElementById(`goal-${key}`).value.trim();
      if (raw !== "") goal[key] = Number(raw);
    }
    return goal;
  }
  document.getElementById("add-step").addEventListener("click", addStep);

  function clearErrors() {
    formError.hidden = true;
    formError.textContent = "";
    for (const element of document.querySelectorAll(".field-error")) element.textContent = "";
    for (const element of document.querySelectorAll("[aria-invalid]")) element.removeAttribute("aria-invalid");
  }

  // ["body","recipe","steps",0,"params","scheme"] -> step-0-scheme; ["body","model_id"] -> model_id;
  // ["body","goal","min_fidelity"] -> goal-min_fidelity.
  function fieldIdFor(loc) {
    const path = loc[0] === "body" ? loc.slice(1) : loc;
    if (path[0] === "goal") return path[1] !== undefined ? `goal-${path[1]}` : "goal";
    if (path[0] === "recipe") {
      const at = path.indexOf("steps");
      if (at >= 0 && Number.isInteger(path[at + 1])) {
        const index = path[at + 1];
        if (path[at + 2] === "params" && path[at + 3] !== undefined) return `step-${index}-${path[at + 3]}`;
        return `step-${index}-technique`;
      }
      return "recipe";
    }
    return path[0] === "name" ? "name" : String(path[0]);
  }

  function showFieldErrors(errors) {
    for (const error of errors || []) {
      const id = fieldIdFor(error.loc || []);
      let box = document.getElementById(`${id}-error`);
      if (!box && id.startsWith("goal-")) box = document.getElementById("goal-error");
      if (!box && id.startsWith("step-")) box = document.getElementById(`${id.split("-").slice(0, 2).join("-")}-technique-error`);
      if (!box) box = document.getElementById("recipe-error");
      const allowed = error.allowed ? ` (allowed: ${[].concat(error.allowed).join(", ")})` : "";
      box.textContent = (box.textContent ? box.textContent + " " : "") + error.msg + allowed;
      const field = document.getElementById(id === "name" ? "job-name" : id);
      if (field) field.setAttribute("aria-invalid", "true");
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const body = {
      model_id: document.getElementById("model_id").value,
      dataset_id: document.getElementById("dataset_id").value || null,
      device: document.getElementById("device").value,
      target: (([runtime, device]) => ({ runtime, device }))(document.getElementById("target").value.split("/")),
    };
    if (mode() === "goal") body.goal = goalFromForm();
    else body.recipe = recipe;
    const name = document.getElementById("job-name").value.trim();
    if (name) body.name = name;
    if (!body.model_id) {
      document.getElementById("model_id-error").textContent = "Choose a model.";
      document.getElementById("model_id").setAttribute("aria-invalid", "true");
      document.getElementById("model_id").focus();
      return;
    }
    const submit = document.getElementById("submit-job");
    submit.disabled = true;
    try {
      const response = await fetch("/v1/jobs", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const answer = await response.json().catch(() => ({}));
      if (response.status === 202) {
        location.assign(`/jobs/${answer.id}`);
        return;
      }
      formError.textContent = answer.detail ? String(answer.detail) : `The server answered ${response.status}.`;
      formError.hidden = false;
      showFieldErrors(answer.errors);
    } catch (error) {
      formError.textContent = "Could not submit the job: " + error.message;
      formError.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });

  async function start() {
    const errorBox = document.getElementById("techniques-error");
    try {
      const response = await fetch("/v1/techniques");
      if (!response.ok) throw new Error(`GET /v1/techniques answered ${response.status}`);
      for (const technique of await response.json()) {
        techniques[technique.name] = technique;
        techniqueSelect.add(new Option(technique.name, technique.name));
      }
    } catch (error) {
      errorBox.textContent = "Could not load the techniques: " + error.message;
      errorBox.hidden = false;
    }
    try {
      const response = await fetch("/v1/recipes/presets");
      if (!response.ok) throw new Error(`GET /v1/recipes/presets answered ${response.status}`);
      addPresets(await response.json());
    } catch (error) {
      const presetError = document.getElementById("presets-error");
      presetError.textContent = "Could not load the presets: " + error.message;
      presetError.hidden = false;
    }
    changed();
    form.dataset.ready = "true";
  }
  start();
})();
