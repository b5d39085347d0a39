"""The names of a model folder's files (what each holds: :mod:`mirec.models.folder`).

On the ground floor because loading settings reads a folder's ``config.yaml`` and
``model.json`` (``--init-from``, :mod:`mirec.config`) as well as the folder's own room.
"""

CONFIG_FILE, WEIGHTS_FILE, MODEL_FILE = "config.yaml", "model.safetensors", "model.json"
ITEMS_FILE, USERS_FILE = "items.parquet", "users.parquet"
METRICS_FILE = "metrics.json"
OPTIMIZER_FILE = "optimizer.safetensors"
"""The optimizer's final state, in a folder trained with ``keep_optimizer_state``."""
FOLDER_FILES = (CONFIG_FILE, WEIGHTS_FILE, MODEL_FILE, ITEMS_FILE, USERS_FILE)
"""What a model folder must hold; ``metrics.json`` travels with it when present."""
EVALUATION_DIR = "evaluation"
"""Where ``mirec evaluate`` writes inside the model folder when no output folder is given."""
LOCK_FILE, SOFT_LOCK_FILE = ".lock", ".lock.soft"
"""The run's lock (:func:`mirec.run_folder.folder_lock`), left in the folder it guarded."""
INDEX_PREFIX = "index-"
"""Item indexes beside the model: ``index-KIND.faiss`` and ``index-KIND.json``."""


def is_model_folder_file(name: str) -> bool:
    """Whether a file of this name belongs in a model folder: what replacing a model folder
    (``Recommender.save(..., overwrite=True)``) may delete without losing anything else."""
    own = (*FOLDER_FILES, METRICS_FILE, OPTIMIZER_FILE, EVALUATION_DIR, LOCK_FILE, SOFT_LOCK_FILE)
    return name in own or name.startswith(INDEX_PREFIX)
