"""Typed errors of the analysis backend; pages turn them into alerts, the CLI into one line.

Every error carries a message that says what went wrong and how to fix it.
"""

from __future__ import annotations


class BackendError(Exception):
    """Base class of every error the backend raises on purpose."""


class DatasetNotFound(BackendError):
    """A dataset path or id is unknown or the file cannot be read."""


class ModelNotFound(BackendError):
    """No checkpoint at the given model path."""


class ModelNotTrained(BackendError):
    """A query needs a trained model but the model was never trained."""


class ModelDataMismatch(BackendError):
    """The model's genes, proteins or batches do not fit the dataset it is paired with."""


class InvalidSelection(BackendError):
    """A cell selection, group or parameter value is not valid for this dataset."""


class LimitExceeded(BackendError):
    """A request is over a configured limit (cells, features, wait time)."""


class CacheError(BackendError):
    """The results cache cannot be used (e.g. a lock could not be acquired in time)."""


class JobNotFound(BackendError):
    """No job with this id in the job registry."""


class JobFailed(BackendError):
    """A background job raised; the message is the job's error message."""


class JobCancelled(BackendError):
    """A background job was cancelled before it finished."""


class MinifiedData(BackendError):
    """The dataset is minified (scvi-hub: counts dropped, the latent posterior kept), and
    the result asked for needs the counts."""
