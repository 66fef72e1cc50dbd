"""教科書の設定：環境変数をクラス属性として import 時に読む。"""

import os
from logging import getLogger

logger = getLogger(__name__)


class APIConfigurations:
    """FastAPI のタイトルなど。"""

    title = os.getenv("API_TITLE", "Model_in_image_pattern")
    description = os.getenv("API_DESCRIPTION", "machine learning system training patterns")
    version = os.getenv("API_VERSION", "0.1")


class ModelConfigurations:
    """モデルとラベルのパス（Dockerfile の ENV で与える）。"""

    model_filepath = os.getenv("MODEL_FILEPATH")
    label_filepath = os.getenv("LABEL_FILEPATH")


logger.info(f"{APIConfigurations.__name__}: {APIConfigurations.__dict__}")
logger.info(f"{ModelConfigurations.__name__}: {ModelConfigurations.__dict__}")
