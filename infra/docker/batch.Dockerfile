# The batch Lambda's image: onnxruntime, numpy and pyarrow do not fit in a zip Lambda together (about 310 MiB
# unzipped against Lambda's 250 MB; see README "Batch scoring"). `cdk deploy` builds it (Docker needed there);
# synth only stages the build context. Build context: the repository root, narrowed by the asset's exclude list
# in infra/constructs/batch.py.
FROM public.ecr.aws/lambda/python:3.12

COPY lambdas/batch/requirements.txt ${LAMBDA_TASK_ROOT}/requirements-batch.txt
RUN pip install --no-cache-dir -r ${LAMBDA_TASK_ROOT}/requirements-batch.txt \
    && rm ${LAMBDA_TASK_ROOT}/requirements-batch.txt

COPY modeldeck/ ${LAMBDA_TASK_ROOT}/modeldeck/
COPY lambdas/__init__.py ${LAMBDA_TASK_ROOT}/lambdas/__init__.py
COPY lambdas/batch/ ${LAMBDA_TASK_ROOT}/lambdas/batch/

CMD ["lambdas.batch.handler.lambda_handler"]
