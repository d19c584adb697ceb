"""Issue 17: long jobs on Ray worker actors across GPUs and machines, routed by the model they
need, resumed on another worker after a worker dies. The head (this process) keeps the SQLite job
queue and the job folders; engine.jobs.JobQueue.attach(cluster) sends its jobs to the workers."""
from .head import Cluster, ClusterError, object_store_bytes
from .routing import View, pick
from .worker import Worker, load_factory

__all__ = ["Cluster", "ClusterError", "View", "Worker", "load_factory", "object_store_bytes", "pick"]
