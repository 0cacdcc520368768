"""A trained model on a folder of new images: uncertainty scores and rankings
(`launch.score`) and predicted masks (`launch.predict`).
"""

from segal_jax.inference import folder_scoring
from segal_jax.inference.folder_scoring import score_folder
from segal_jax.inference.folder_scoring import ScoreConfig
from segal_jax.inference import prediction
from segal_jax.inference.prediction import predict_folder

__all__ = ['folder_scoring', 'predict_folder', 'prediction', 'score_folder', 'ScoreConfig']
