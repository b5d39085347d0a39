"""The names of a model folder's files (what each holds: :mod:`mirec.models.folder`).

On the ground floor because loading settings reads a folder's ``config.yaml`` and
``model.json`` (``--init-from``, :mod:`mirec.config`) as well as the folder's own room.
"""

CONFIG_FILE, WEIGHTS_FILE, MODEL_FILE = "config.yaml", "model.safetensors", "model.json"
ITEMS_FILE, USERS_FILE = "items.parquet", "users.parquet"
METRICS_FILE = "metrics.json"
FOLDER_FILES = (CONFIG_FILE, WEIGHTS_FILE, MODEL_FILE, ITEMS_FILE, USERS_FILE)
"""What a model folder must hold; ``metrics.json`` travels with it when present."""
