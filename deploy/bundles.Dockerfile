# The model bundles as an image of their own, for the Kubernetes Deployment's initContainer
# (deploy/k8s/deployment.yaml copies /bundles into the pod). Models then version and roll back
# like code, without rebuilding the server image. Build with the bundles folder as the context:
#
#   docker build -f deploy/bundles.Dockerfile -t kdserve-bundles:2024-06-01 runs/bundles
#
# busybox is for `cp` in the initContainer; the bundles stay root-owned and read-only.
FROM busybox:1.36.1
COPY . /bundles/
USER 10001:10001
