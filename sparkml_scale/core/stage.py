"""The stage template: what every Estimator/Model over a vector column does, written once.

An algorithm subclasses :class:`VectorEstimator` and :class:`VectorModel` and supplies only
its math as hooks; the template owns the rest, in this order (after spark-rapids-ml's
``_CumlEstimator``/``_CumlModel`` and scikit-learn's ``BaseEstimator``)::

    fit(df)                                         VectorEstimator._fit
      validate params        _param_constraints table (core.params) + _validate_extra() hook
      check the schema       _input_roles / _output_params (core.schema), before any Spark job
      probe the features     TrainingColumns.probe: dense or sparse, size d (one tiny job)
      hook                   _check_features(d)
      training input         _input = "blocks": cached numpy blocks + statistics (core.blocks),
                             bad rows raised once (core.training.BadRows); "passes": nothing
                             cached, the solver asks for one-pass statistics; "blocks" stages
                             whose _supports_direct() is true skip the blocks when the solver
                             is allreduce (explicit, or auto's choice): TrainingData.direct,
                             statistics, checks and L-BFGS in one barrier stage over the input
                             partitions (_direct_execution, TrainingData.minimize_direct)
      hook                   _check_stats(stats)               ("blocks" only)
      execution              _execution(stats): mapreduce / allreduce from the slots and
                             memory of the cluster (core.cluster.choose_execution)
      hook                   _solve(data: TrainingData) -> result (numpy)
      hook                   _create_model(result) -> Model; params copied; lineage recorded
      hook                   _training_summary(model, dataset, result, seconds) (optional)

    transform(df)                                   VectorModel._transform
      validate params, check the schema (vector input, new output columns)
      hook                   _output_fields() -> [(param, name, DataType)] of the outputs to add
      hook                   _block_predictor() -> picklable fn(X (n, d)) -> one array per output
      one Arrow UDF per batch, null vectors passed through as nulls, every column name quoted

:class:`TrainingData` is the solver's only handle on the data: the passes it may run
(:meth:`TrainingData.gram`, :meth:`~TrainingData.moments`, :meth:`~TrainingData.covariance_apply`,
:meth:`~TrainingData.aggregate`, :meth:`~TrainingData.minimize`, :meth:`~TrainingData.barrier`)
take and return numpy, so an algorithm file never touches a DataFrame.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Params
from pyspark.sql import types as T

from .cluster import EXECUTIONS, Execution, choose_execution
from .display import ReadableRepr
from .lineage import RecordsLineage
from .params import validate_params
from .persistence import ParamsReadWrite
from .schema import check_new_column, check_roles, check_vector_column, col
from .progress import FitProgress
from .training import BadRows, TrainingColumns

__all__ = ["StageParams", "VectorEstimator", "VectorModel", "TrainingData", "Execution"]


class StageParams(Params):
    """Params mixin of template stages: declarative validation and column roles.

    Class attributes a stage sets:

    - ``_param_constraints``: ``{param name: constraint or [constraints]}`` (see
      :mod:`sparkml_scale.core.params`);
    - ``_input_roles``: ``(param, kind, optional)`` triples, kind ``"vector"``, ``"numeric"``
      or ``"any"`` (e.g. ``("featuresCol", "vector", False)``, ``("weightCol", "numeric", True)``);
      the first vector role is the features;
    - ``_output_params``: params naming the new columns ``transform`` adds (empty = not added).
    """

    _param_constraints: Dict[str, Any] = {}
    _input_roles: Tuple[Tuple[str, str, bool], ...] = (("featuresCol", "vector", False),)
    _output_params: Tuple[str, ...] = ()

    def _validate_params(self) -> None:
        """Check every declared constraint, then the stage's cross-param rules; ``ValueError``
        naming the param."""
        validate_params(self)
        self._validate_extra()

    def _validate_extra(self) -> None:
        """Hook: rules that tie several params together (default: none)."""

    def _col_of(self, param: str) -> Optional[str]:
        """The column named by ``param``, or ``None`` when the param is unset or empty."""
        p = self.getParam(param)
        v = self.getOrDefault(p) if self.isDefined(p) else None
        return v or None

    def _has_role(self, param: str) -> bool:
        """Whether ``param`` names one of the stage's input columns."""
        return any(p == param for p, _, _ in self._input_roles)

    @property
    def _features_param(self) -> str:
        return next(p for p, k, _ in self._input_roles if k == "vector")

    def _weight_col(self) -> Optional[str]:
        return self._col_of("weightCol") if self.hasParam("weightCol") else None

    def _check_input_schema(self, schema: T.StructType, outputs: bool = False) -> None:
        """Check the declared input columns (and, with ``outputs``, that the output columns do
        not exist yet) before any Spark job."""
        check_roles(self, schema, self._input_roles, self._output_params if outputs else ())


class TrainingData:
    """What a solver sees of its training DataFrame (built by :meth:`VectorEstimator._fit`).

    Attributes: ``cols`` (:class:`~sparkml_scale.core.training.TrainingColumns`: names, dense
    or sparse, ``size`` = d), ``stats`` (:class:`~sparkml_scale.core.blocks.BlockStats` of the
    cached blocks, ``None`` for ``_input = "passes"``), ``execution``
    (:class:`~sparkml_scale.core.cluster.Execution`, ``None`` for "passes"), ``depth``
    (``aggregationDepth``).  Every method runs Spark jobs and returns numpy.
    """

    def __init__(self, df, cols: TrainingColumns, depth: int, blocks=None, execution: Optional[Execution] = None,
                 progress: Optional[FitProgress] = None, direct: bool = False, num_partitions: Optional[int] = None):
        self._df = df
        self.cols = cols
        self.depth = depth
        self._blocks = blocks
        self.stats = blocks.stats if blocks is not None else None
        self.execution = execution
        #: ``True``: the direct allreduce path (no cached blocks; ``stats`` is ``None`` until
        #: :meth:`minimize_direct` has run), see :meth:`VectorEstimator._direct_execution`.
        self.direct = direct
        self._num_partitions = num_partitions
        #: The fit's :class:`~sparkml_scale.core.progress.FitProgress`: every method below names its
        #: Spark jobs through it; solvers add a bar (``progress.bar``/``advance``) for their loops.
        self.progress = progress if progress is not None else FitProgress(None, "", enabled=False)

    # one-pass statistics of the raw input ("passes")
    def gram(self, support: Optional[np.ndarray] = None):
        """:func:`sparkml_scale.core.gram.gram_pass` of the input: ``GramStats``."""
        from .gram import gram_pass

        self.progress.step("Gram pass" if support is None else f"Gram pass over {len(support)} columns")
        return gram_pass(self._df, self.cols, depth=self.depth, support=support)

    def moments(self):
        """:func:`sparkml_scale.core.gram.moments_pass` of the input: ``Moments``."""
        from .gram import moments_pass

        self.progress.step("moments pass")
        return moments_pass(self._df, self.cols, depth=self.depth)

    def covariance_apply(self, support: np.ndarray, Q: np.ndarray, num_partitions: Optional[int] = None,
                         step: str = "covariance pass"):
        """:func:`sparkml_scale.core.gram.covariance_apply_pass`: ``X_S^T (X_S Q)``; ``step`` names
        its Spark job."""
        from .gram import covariance_apply_pass

        self.progress.step(step)
        return covariance_apply_pass(self._df, self.cols, support, Q, depth=self.depth,
                                     num_partitions=num_partitions)

    def aggregate(self, partial: Callable[[Iterable], Optional[Sequence[np.ndarray]]],
                  step: Optional[str] = None) -> List[np.ndarray]:
        """Sum ``partial(blocks)`` over partitions (one Spark job, tree-aggregated; named ``step``
        when given).

        ``partial`` runs on the executors (picklable), receives an iterator of ``(X, y, w)``
        blocks of one partition (``X`` ``(m, d)`` float64 ndarray or CSR, ``y``/``w`` ``(m,)``
        or ``None`` without a label/weight column) and returns a list of numpy arrays (or
        ``None``).  With ``_input = "blocks"`` the blocks are the cached ones (checked already);
        with ``"passes"`` they are read from the input, and bad rows raise here
        (:meth:`~sparkml_scale.core.training.BadRows.raise_for`).  Returns the element-wise sums.
        """
        from .blocks import iter_blocks
        from .mapreduce import tree_aggregate
        from .training import clean_blocks

        if step is not None:
            self.progress.step(step)
        if self._blocks is not None and self._blocks.store is not None:
            return self._aggregate_store(partial)
        if self._blocks is not None:
            def run(batches):
                return partial(iter_blocks(batches))

            arrays, _ = tree_aggregate(self._blocks.blocks, run, depth=self.depth,
                                       num_partitions=self.stats.num_partitions)
            return arrays
        cols = self.cols

        def checked(batches):
            meta = BadRows.new()
            out = partial(clean_blocks(batches, cols, meta))
            return [meta] + list(out if out is not None else [])

        arrays, _ = tree_aggregate(cols.select(self._df), checked, depth=self.depth)
        BadRows.raise_for(arrays[0] if arrays is not None else BadRows.new(), cols)
        return arrays[1:]

    def _aggregate_store(self, partial) -> List[np.ndarray]:
        """:meth:`aggregate` over blocks in a :class:`~sparkml_scale.core.blocks.LocalBlockStore`:
        each task maps its partition's file; a partition whose task found no file (it ran on
        another executor) is read again from the input in a second job, which also writes its
        file there for the next pass."""
        from pyspark.sql import functions as F

        from .blocks import StatsAccumulator, block_chunks
        from .mapreduce import _partition_id, add_partials, tree_aggregate

        store, P = self._blocks.store, self.stats.num_partitions

        def with_hit(pid, blocks):
            hit = np.zeros(P)
            hit[pid] = 1.0
            out = partial(iter(blocks))
            return [hit] + list(out if out is not None else [])

        def run(batches):
            for _ in batches:
                pass
            pid = _partition_id()
            blocks = store.read(pid)
            return None if blocks is None else with_hit(pid, blocks)

        arrays, _ = tree_aggregate(self._blocks.blocks, run, depth=self.depth, num_partitions=P)
        hits = arrays[0] if arrays is not None else np.zeros(P)
        missing = [int(p) for p in np.flatnonzero(hits == 0)]
        if missing:
            cols, block_bytes = self.cols, self._blocks.block_bytes

            wanted = set(missing)

            def reread(batches):
                pid = _partition_id()
                if pid not in wanted:
                    return None
                blocks = list(block_chunks(StatsAccumulator(cols).blocks(batches), block_bytes))
                store.write(pid, iter(blocks))
                return with_hit(pid, blocks)

            again = cols.select(self._df).where(F.spark_partition_id().isin(missing))
            more, _ = tree_aggregate(again, reread, depth=1)
            arrays = add_partials(arrays, more) or [np.zeros(P)]
            if not np.all(arrays[0] == 1):
                raise RuntimeError("the training input's partitions changed during the fit: partition(s) "
                                   f"{np.flatnonzero(arrays[0] != 1).tolist()} could not be read again")
        return arrays[1:]

    def minimize(self, objective, block_sums):
        """Minimize ``objective`` (:class:`~sparkml_scale.core.optim.lbfgs.LBFGSObjective`)
        whose data term is ``block_sums(blocks, coef, b)`` with the chosen execution: one
        Spark job per evaluation (mapreduce) or one barrier stage (allreduce).  Returns
        ``(x, history, iterations, evaluations, allreduce backend or None)``."""
        from .optim.lbfgs import minimize_allreduce, minimize_mapreduce

        progress = self.progress
        method = "Newton" if getattr(block_sums, "hessian", False) else "L-BFGS"
        progress.bar(method, total=objective.max_iter, unit="it")
        if self.execution is not None and self.execution.kind == "allreduce":
            if self._blocks.store is not None:
                raise RuntimeError("blocks kept on local disks are read by map-reduce passes only")
            world = self.execution.world
            progress.step(f"L-BFGS in one barrier stage of {world} tasks")
            return minimize_allreduce(self._blocks.blocks, objective, block_sums, world,
                                      self.stats.num_partitions, progress=progress.channel())

        def on_iteration(it: int, f: float) -> None:
            progress.advance(objective=f)
            progress.step(f"{method} iteration {it + 1}")

        progress.step(f"{method} iteration 1")
        x, history, nit, nfev = minimize_mapreduce(self, objective, block_sums, on_iteration)
        return x, history, nit, nfev, None

    def minimize_direct(self, problem):
        """Statistics, checks and L-BFGS in one barrier stage over the input partitions
        (:func:`~sparkml_scale.core.optim.lbfgs.minimize_direct`; ``direct`` data only).
        ``problem``: picklable, ``check(stats)`` raising the driver's ``ValueError`` for bad input
        and ``setup(stats, aggregate) -> (LBFGSObjective, block_sums)``.  Sets ``stats`` (a
        :class:`~sparkml_scale.core.blocks.BlockStats`) and returns ``((coef (K, d), intercept
        (K,)), history, iterations, evaluations, backend)``; raises ``problem.check``'s error."""
        from .optim.lbfgs import minimize_direct

        progress = self.progress
        world = self.execution.world
        progress.step(f"reading rows and L-BFGS in one barrier stage of {world} tasks")
        progress.bar("L-BFGS", total=max(int(getattr(problem, "max_iter", 0)), 1), unit="it")
        stats, result, history, nit, nfev, backend = minimize_direct(
            self.cols.select(self._df), self.cols, problem, world, self._num_partitions, progress=progress.channel())
        self.stats = stats
        return result, history, nit, nfev, backend

    def sgd(self, state, block_sums, epochs: int, batch_size: int, step: float, seed: int) -> List[float]:
        """Train ``state`` (:class:`~sparkml_scale.core.optim.sgd.SGDState`) in place by
        AdaGrad with parameter mixing, one Spark job per epoch; returns the loss per epoch."""
        from .optim.sgd import sgd_epochs

        if self._blocks.store is not None:
            raise RuntimeError("blocks kept on local disks are read by map-reduce passes only")
        progress = self.progress
        progress.bar("SGD", total=epochs, unit="epoch")
        first = state.epochs_done

        def on_epoch(epoch: int, loss: float) -> None:
            progress.advance(loss=loss)
            progress.step(f"SGD epoch {epoch + 2 - first} of {epochs}")

        progress.step(f"SGD epoch 1 of {epochs}")
        return sgd_epochs(self._blocks.blocks, state, block_sums, epochs, batch_size, step, seed, self.depth,
                          self.stats.num_partitions, on_epoch=on_epoch)


class VectorEstimator(ReadableRepr, RecordsLineage, StageParams, Estimator, ParamsReadWrite):
    """Template Estimator over a vector column (see the module docstring).

    Class attributes: ``_input`` (``"blocks"`` or ``"passes"``), ``_labels`` (``"real"`` or
    ``"classes"``), ``_max_classes`` (class labels accepted: ``0 .. _max_classes - 1``).
    Hooks: :meth:`_solve` and :meth:`_create_model` (required); :meth:`_check_features`,
    :meth:`_check_stats`, :meth:`_num_classes`, :meth:`_training_summary`,
    :meth:`_validate_extra` (optional).
    """

    _input = "passes"
    _labels = "real"
    _max_classes = 2

    # ---- hooks
    def _check_features(self, d: int) -> None:
        """Hook: checks of the number of features ``d`` (e.g. ``k <= d``)."""

    def _check_stats(self, stats) -> None:
        """Hook (``_input = "blocks"``): checks of the statistics after the bad-row checks."""

    def _num_classes(self) -> int:
        """Hook: class labels accepted (``labels = "classes"``): ``0 .. value - 1``."""
        return self._max_classes

    def _solve(self, data: TrainingData) -> Any:
        raise NotImplementedError

    def _supports_direct(self) -> bool:
        """Hook (``_input = "blocks"``): whether :meth:`_solve` handles ``TrainingData.direct``
        (L-BFGS in one barrier stage straight from the input partitions; default: no)."""
        return False

    def _create_model(self, result: Any) -> Model:
        raise NotImplementedError

    def _training_summary(self, model, dataset, result, seconds: float):
        """Hook: the model's training summary (default: none)."""
        return None

    # ---- the template
    def _training_columns(self) -> TrainingColumns:
        label = self._col_of("labelCol") if self._has_role("labelCol") else None
        return TrainingColumns(
            features=self.getOrDefault(self._features_param), features_param=self._features_param,
            label=label, weight=self._weight_col() if self._has_role("weightCol") else None,
            labels=self._labels if label else "real", num_classes=self._num_classes(),
            binary=self._num_classes() == 2)

    def _execution(self, spark, stats) -> Execution:
        """Mapreduce or allreduce for an iterative fit, from param ``solver`` (values of
        :data:`~sparkml_scale.core.cluster.EXECUTIONS`; any other value is the stage's own, e.g.
        ``"sgd"``, passed through as the execution kind)."""
        solver = self.getOrDefault("solver") if self.hasParam("solver") else "auto"
        if solver not in EXECUTIONS:
            return Execution(solver, 0, f"solver={solver!r}")
        per_row = (stats.nnz / max(stats.count, 1)) * 12.0 if stats.sparse else stats.num_features * 8.0
        return choose_execution(spark, solver, stats.num_partitions, per_row, stats.count)

    def _direct_execution(self, dataset, cols: TrainingColumns,
                          progress: Optional[FitProgress] = None) -> Optional[Tuple[Execution, Optional[int]]]:
        """``(allreduce Execution, input partitions)`` when this fit runs straight from the input
        partitions (no cached block table), else ``None`` (the cached-blocks path).

        Only for stages whose :meth:`_supports_direct` is true and ``solver`` ``"allreduce"`` or
        ``"auto"``.  One light Spark job counts the rows of every input partition
        (:func:`~sparkml_scale.core.allreduce.partition_rows`: no feature crosses to Python), so
        the barrier stage runs on the input partitions as they are when there are no more of them
        than task slots and the plan passes Spark's barrier check
        (:func:`~sparkml_scale.core.allreduce.barrier_safe`; else they are repartitioned to the
        slots).  ``"auto"`` decides with
        :func:`~sparkml_scale.core.cluster.choose_execution` from that row count and an
        estimate of a row's bytes (``8 d`` dense; sparse: 12 bytes per stored value of the first
        row, at least 1): the direct path when it says allreduce, else ``None`` (then the blocks
        path decides again from the exact statistics).  ``ValueError`` as
        ``choose_execution`` (e.g. ``"allreduce"`` without known task slots)."""
        from .allreduce import barrier_safe, partition_rows

        solver = self.getOrDefault("solver") if self.hasParam("solver") else "auto"
        if solver not in ("auto", "allreduce") or not self._supports_direct():
            return None
        if progress is not None:
            progress.step("counting the rows of the input partitions")
        rows = partition_rows(dataset)
        nparts = len(rows)
        if cols.dense:
            per_row = cols.size * 8.0
        else:
            per_row = max(int(cols.first_nnz or 1), 1) * 12.0
        execution = choose_execution(dataset.sparkSession, solver, max(nparts, 1), per_row, int(sum(rows)))
        if execution.kind != "allreduce":
            return None
        if not barrier_safe(dataset):  # e.g. coalesce(): the barrier stage needs a shuffle first
            return Execution("allreduce", execution.world, execution.reason + ", input repartitioned"), None
        return Execution("allreduce", execution.world, execution.reason + ", read straight from the input"), nparts

    def _blocks_on_local_disk(self) -> bool:
        """Hook (``_input = "blocks"``): keep the blocks in files on the executors' local disks
        (:class:`~sparkml_scale.core.blocks.LocalBlockStore`), not in the Spark cache.  Default:
        when param ``solver`` is ``"mapreduce"``, whose every evaluation reads every block (from
        a mapped file instead of through the JVM: about 1.5 s less per evaluation of 1M x 100
        dense rows)."""
        return self.hasParam("solver") and self.getOrDefault("solver") == "mapreduce"

    def _block_bytes(self) -> int:
        if self.hasParam("maxBlockSizeInMB"):
            return int(self.getOrDefault("maxBlockSizeInMB") * (1 << 20))
        return 0

    def _depth(self) -> int:
        return int(self.getOrDefault("aggregationDepth")) if self.hasParam("aggregationDepth") else 2

    def _prepare(self, dataset, allow_empty: bool = False, progress: Optional[FitProgress] = None):
        """Validate, check the schema, probe and (``_input = "blocks"``) build the cached blocks
        with their checks: ``TrainingData`` (call ``_release`` on it when done).  Spark jobs are
        named through ``progress`` (:class:`~sparkml_scale.core.progress.FitProgress`)."""
        from .blocks import LocalBlockStore, make_blocks

        self._validate_params()
        self._check_input_schema(dataset.schema)
        cols = self._training_columns()
        if progress is not None:
            progress.step(f"reading the first row of column {cols.features!r}")
        try:
            cols.probe(dataset)
        except ValueError:
            if allow_empty:
                return None
            raise
        self._check_features(cols.size)
        if self._input != "blocks":
            return TrainingData(dataset, cols, self._depth(), progress=progress)
        direct = self._direct_execution(dataset, cols, progress)
        if direct is not None:
            return TrainingData(dataset, cols, self._depth(), execution=direct[0], progress=progress, direct=True,
                                num_partitions=direct[1])
        store = LocalBlockStore() if self._blocks_on_local_disk() else None
        if progress is not None:
            progress.step("checking rows and writing training blocks to local disk" if store else
                          "checking rows and caching training blocks")
        blocks = make_blocks(dataset, cols, depth=self._depth(), block_bytes=self._block_bytes(), store=store)
        try:
            BadRows.raise_for(blocks.stats.meta, cols)
            self._check_stats(blocks.stats)
        except BaseException:
            blocks.unpersist()
            raise
        return TrainingData(dataset, cols, self._depth(), blocks, progress=progress)

    @staticmethod
    def _release(data: Optional[TrainingData]) -> None:
        if data is not None and data._blocks is not None:
            data._blocks.unpersist()

    def _fit(self, dataset):
        t0 = time.perf_counter()
        with FitProgress(dataset.sparkSession, type(self).__name__) as progress:
            data = self._prepare(dataset, progress=progress)
            try:
                if data.stats is not None:
                    data.execution = self._execution(dataset.sparkSession, data.stats)
                result = self._solve(data)
            finally:
                self._release(data)
        model = self._create_model(result)
        self._copyValues(model)
        summary = self._training_summary(model, dataset, result, time.perf_counter() - t0)
        if summary is not None:
            model._summary = summary
        return model


class VectorModel(ReadableRepr, StageParams, Model, ParamsReadWrite):
    """Template Model over a vector column (see the module docstring).

    Hooks: :meth:`_output_fields` (the columns to add) and :meth:`_block_predictor` (their
    values for a block of rows); :meth:`_num_features` (the vector size expected).  Class
    attribute ``_dense_input``: ``True`` hands the predictor dense blocks always; ``None``
    (default) dense when every row of the batch is dense, else CSR.
    """

    _dense_input: Optional[bool] = None

    def _output_fields(self) -> List[Tuple[str, str, T.DataType]]:
        """Hook: ``(param, column name, Spark type)`` of each output ``transform`` adds, in order
        (outputs whose param is empty are left out by the hook)."""
        raise NotImplementedError

    def _block_predictor(self) -> Callable[[Any], List[Any]]:
        """Hook: a picklable ``fn(X)`` (``X`` a float64 ``(n, d)`` ndarray or CSR) returning one
        value per output of :meth:`_output_fields`: ``(n,)`` arrays for double columns,
        ``(n, k)`` arrays for vector columns."""
        raise NotImplementedError

    def _num_features(self) -> Optional[int]:
        """Hook: the vector size the model expects (``None``: any)."""
        return None

    def transformSchema(self, schema: T.StructType) -> T.StructType:
        """The input schema plus the output columns; ``ValueError``/``TypeError`` naming the column
        and param for a missing or non-vector input or an existing output column."""
        check_vector_column(schema, self.getOrDefault(self._features_param), self._features_param)
        fields = list(schema.fields)
        for param, name, dt in self._output_fields():
            check_new_column(schema, name, param)
            fields.append(T.StructField(name, dt, True))  # null where the features are null
        return T.StructType(fields)

    def _transform(self, dataset):
        self._validate_params()
        self.transformSchema(dataset.schema)
        outputs = self._output_fields()
        if not outputs:
            return dataset
        return map_vectors(dataset, self.getOrDefault(self._features_param), outputs, self._block_predictor(),
                           size=self._num_features(), dense=self._dense_input)


def _to_arrow(value, dt: T.DataType) -> pa.Array:
    from .arrow import dense_to_vectors

    if isinstance(dt, T.DoubleType):
        return pa.array(np.asarray(value, dtype=np.float64))
    return dense_to_vectors(np.asarray(value))


def map_vectors(dataset, input_col: str, outputs: Sequence[Tuple[str, str, T.DataType]],
                predict: Callable[[Any], List[Any]], size: Optional[int] = None, dense: Optional[bool] = None):
    """``dataset`` plus the columns ``outputs`` (``(param, name, type)``) computed from the vector
    column ``input_col`` by ``predict(X)`` (one value per output) in one Arrow UDF per batch.

    ``X`` is the batch's non-null vectors as a float64 block (``size`` columns, a different size
    raises ``VectorColumnError``; ``dense=True`` always dense, else dense when every row is);
    null vectors give null outputs.  Column names are quoted (dots and backticks work).
    """
    from pyspark.sql import functions as F

    from .arrow import map_valid, vectors_to_block
    from .session import vector_arrow_udf

    types = [dt for _, _, dt in outputs]
    single = len(outputs) == 1
    ret = types[0] if single else T.StructType([T.StructField(f"c{i}", dt, True) for i, dt in enumerate(types)])

    def rows(vectors: pa.Array) -> pa.Array:
        values = predict(vectors_to_block(vectors, input_col, size=size, dense=dense))
        arrays = [_to_arrow(v, dt) for v, dt in zip(values, types)]
        if single:
            return arrays[0]
        return pa.StructArray.from_arrays(arrays, names=[f"c{i}" for i in range(len(arrays))])

    def batch(vectors: pa.Array) -> pa.Array:
        return map_valid(vectors, rows)

    udf = vector_arrow_udf(dataset.sparkSession, batch, ret)
    if single:
        return dataset.select("*", udf(col(input_col)).alias(outputs[0][1]))
    tmp = "__sparkml_scale_out"
    out = dataset.select("*", udf(col(input_col)).alias(tmp))
    return out.select(*[col(c) for c in dataset.columns],
                      *[F.col(tmp).getField(f"c{i}").alias(name) for i, (_, name, _) in enumerate(outputs)])
