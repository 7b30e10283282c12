# The training Lambda's image: scikit-learn does not fit in a zip Lambda next to its dependencies
# (facts: 258 MiB unzipped), so training runs from a container image. `cdk deploy` builds it (Docker
# needed there); synth only stages the build context. Build context: the repository root, narrowed by
# the asset's exclude list in infra/constructs/training.py.
FROM public.ecr.aws/lambda/python:3.12

# lightgbm's library links libgomp.so.1 (OpenMP), which the AL2023 minimal base image lacks; its package
# manager there is microdnf, symlinked as dnf ("Working with Lambda base images", AWS Lambda docs).
RUN dnf install -y libgomp && dnf clean all

COPY training/requirements.txt ${LAMBDA_TASK_ROOT}/requirements-training.txt
RUN pip install --no-cache-dir -r ${LAMBDA_TASK_ROOT}/requirements-training.txt \
    && rm ${LAMBDA_TASK_ROOT}/requirements-training.txt

COPY modeldeck/ ${LAMBDA_TASK_ROOT}/modeldeck/
COPY training/ ${LAMBDA_TASK_ROOT}/training/
COPY lambdas/__init__.py ${LAMBDA_TASK_ROOT}/lambdas/__init__.py
COPY lambdas/pipeline/ ${LAMBDA_TASK_ROOT}/lambdas/pipeline/
# Specs ship with the image: an execution without a "spec" reads models/{model}.toml.
COPY models/ ${LAMBDA_TASK_ROOT}/models/

# SageMaker (training.compute = "sagemaker") runs this same image with the argument `train`.
COPY infra/docker/training-entrypoint.sh /training-entrypoint.sh
ENTRYPOINT ["/training-entrypoint.sh"]
CMD ["lambdas.pipeline.handler.lambda_handler"]
