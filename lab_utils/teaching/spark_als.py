"""The same ALS, scaled out: Spark MLlib's ALS on one ratings split, for comparison with lab_utils.teaching.als.

pyspark is an optional extra (requirements-spark.txt) and needs a Java 17+
runtime; it is imported only when a Spark run is asked for, and its absence is
one clear message. The master is `local[*]` (every core of this machine)
unless LAB_SPARK_MASTER or an explicit argument names a cluster URL.

MLlib's ALS minimises the same squared error with the ALS-WR penalty
(regParam scaled by each user's/item's number of ratings), like
`als.als_fit(weighted_reg=True)`, but has no bias terms and starts from its
own random factors, so RMSEs agree closely but not to the digit.
"""

import os
import time

import numpy as np

from lab_utils.teaching.als import rmse
from lab_utils.core.errors import MachineError

DEFAULT_MASTER = "local[*]"


class SparkUnavailable(MachineError):
    """pyspark (or the Java it needs) is missing; the message says how to install it."""


def spark_master(explicit: str | None = None) -> str:
    return explicit or os.environ.get("LAB_SPARK_MASTER") or DEFAULT_MASTER


def import_pyspark():
    try:
        import pyspark  # noqa: F401
        from pyspark.ml.recommendation import ALS
        from pyspark.sql import SparkSession
    except ImportError as err:
        raise SparkUnavailable(
            f"pyspark is not installed ({err}); install the optional extra with "
            "`pip install -r requirements-spark.txt` (it also needs Java 17 or 21 on the PATH)."
        ) from None
    return SparkSession, ALS


def start_session(master: str | None = None, app_name: str = "finetune-lab-als"):
    SparkSession, _ = import_pyspark()
    builder = (
        SparkSession.builder.master(spark_master(master)).appName(app_name)
        .config("spark.ui.enabled", "false")  # no web UI port for a classroom demo or a test
        .config("spark.sql.shuffle.partitions", "4")  # tiny data: 200 default partitions is pure overhead
    )
    try:
        session = builder.getOrCreate()
    except Exception as err:  # py4j raises bare exceptions when Java is missing or too old
        raise SparkUnavailable(f"could not start Spark at master '{spark_master(master)}': "
                               f"{str(err).splitlines()[0]}") from None
    session.sparkContext.setLogLevel("ERROR")
    return session


def _frame(session, ratings):
    users, items, values = ratings
    rows = list(zip(users.tolist(), items.tolist(), np.asarray(values, dtype=float).tolist()))
    return session.createDataFrame(rows, ["user", "item", "rating"])


def spark_als(train, test, *, rank: int, reg: float, n_iters: int, seed: int = 0, master: str | None = None,
              clip=None) -> dict:
    """Fit MLlib ALS on `train`, predict `test`; returns RMSE and the seconds spent starting, fitting, predicting."""
    _, ALS = import_pyspark()
    start = time.perf_counter()
    session = start_session(master)
    started = time.perf_counter()
    try:
        als = ALS(rank=rank, regParam=reg, maxIter=n_iters, seed=seed, userCol="user", itemCol="item",
                  ratingCol="rating", nonnegative=False, coldStartStrategy="nan")
        model = als.fit(_frame(session, train))
        fitted = time.perf_counter()
        rows = model.transform(_frame(session, test)).select("user", "item", "rating", "prediction").collect()
        predicted = time.perf_counter()
        master_used = session.sparkContext.master
    finally:
        session.stop()
    pred = np.array([r["prediction"] for r in rows], dtype=float)
    truth = np.array([r["rating"] for r in rows], dtype=float)
    # a user or item unseen in training gets NaN from Spark: predict the training mean, as our model would
    pred = np.where(np.isnan(pred), float(np.mean(train[2])), pred)
    if clip:
        pred = np.clip(pred, *clip)
    return {
        "rmse": rmse(pred, truth),
        "master": master_used,
        "startup_seconds": started - start,
        "fit_seconds": fitted - started,
        "predict_seconds": predicted - fitted,
    }
