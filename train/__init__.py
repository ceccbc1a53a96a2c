"""Training stages (torch). The OpenMP thread policy is applied here, before any module of the
package imports torch: the runtime reads its environment once, when it loads (``kdserve.train.threads``)."""

from kdserve.train.threads import apply_thread_policy

apply_thread_policy()
