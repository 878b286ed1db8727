"""Label suggestions: which unlabelled rows of a dataset version are worth labelling next for a classifier
built on one of the tenant's models. The choice runs on a CPU worker (it embeds every row with the
model), so a request is queued, and its result is read back when the worker has written it."""

import logging

from sqlalchemy.orm import Session

from app.core.errors import Invalid, NotFound
from app.datasets import repository
from app.datasets.orm import SUGGESTION_FAILED, SUGGESTION_QUEUED, LabelSuggestion
from app.datasets.service import get_dataset, require_rows_here
from app.db.base import utcnow
from app.db.session import run_after_commit, session_scope
from app.models import repository as models_repository
from workers.celery_app import SUGGEST_LABELS_TASK, celery_app

logger = logging.getLogger(__name__)

SUGGESTION_TASKS = ("feature-extraction", "text-classification")
# The engine refuses more too (workers.engine.label_suggestions, which the API does not import: torch).
MAX_SUGGESTIONS = 1000
SUGGESTION_QUEUE = "cpu"


def request_suggestions(session: Session, tenant_id: str, dataset_id: str, model_id: str, n: int) -> LabelSuggestion:
    dataset = require_rows_here(
        get_dataset(session, tenant_id, dataset_id), "embedded for label suggestions",
        "suggestions read every row, so ask for them on a dataset uploaded with POST /v1/datasets",
    )
    if not 1 <= n <= MAX_SUGGESTIONS:
        raise Invalid(f"n must be between 1 and {MAX_SUGGESTIONS}; it is {n}.",
                      errors=[{"loc": ["query", "n"], "msg": f"between 1 and {MAX_SUGGESTIONS}"}])
    model = models_repository.get_owned(session, tenant_id, model_id)
    if model is None:
        raise Invalid(f"Model {model_id} not found: upload it first with POST /v1/models.",
                      errors=[{"loc": ["body", "model_id"], "msg": "not found"}])
    if model.task not in SUGGESTION_TASKS:
        msg = f"the model is a {model.task} model; suggestions are for classifiers built on an encoder or a classifier"
        raise Invalid(f"model_id: {msg}.", errors=[{"loc": ["body", "model_id"], "msg": msg}])
    if dataset.num_labelled is not None and dataset.num_labelled >= dataset.num_rows:
        msg = "every row of this dataset version is labelled already"
        raise Invalid(f"{msg}: there is nothing to suggest.", errors=[{"loc": ["path", "dataset_id"], "msg": msg}])
    suggestion = repository.add_suggestion(session, LabelSuggestion(
        tenant_id=tenant_id, dataset_id=dataset.id, model_id=model.id, n=n, status=SUGGESTION_QUEUED,
    ))
    suggestion_id = suggestion.id
    run_after_commit(session, lambda: dispatch_suggestion(suggestion_id))
    return suggestion


def dispatch_suggestion(suggestion_id: str) -> None:
    """Sends the committed suggestion to a CPU worker; if the broker refuses, the suggestion fails with a
    message saying to ask again (it holds nothing the user could lose)."""
    try:
        celery_app.send_task(SUGGEST_LABELS_TASK, args=[suggestion_id], queue=SUGGESTION_QUEUE)
    except Exception:  # noqa: BLE001 - any broker failure
        logger.exception("could not send label suggestion %s to the cpu queue", suggestion_id)
        with session_scope() as session:
            suggestion = repository.get_suggestion(session, suggestion_id)
            suggestion.status, suggestion.finished_at = SUGGESTION_FAILED, utcnow()
            suggestion.error = "The job queue could not be reached; ask for suggestions again in a moment."


def get_suggestion(session: Session, tenant_id: str, dataset_id: str, suggestion_id: str) -> LabelSuggestion:
    suggestion = repository.get_suggestion(session, suggestion_id)
    if suggestion is None or suggestion.tenant_id != tenant_id or suggestion.dataset_id != dataset_id:
        raise NotFound(f"Label suggestion {suggestion_id} not found for dataset {dataset_id}.")
    return suggestion
