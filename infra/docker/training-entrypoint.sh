#!/bin/sh
# One image, two runners. SageMaker runs a training image as `docker run IMAGE train`
# (SageMaker developer guide: "How Amazon SageMaker runs your training image"); Lambda passes the
# handler from ImageConfig.Command, which goes on to Lambda's own entrypoint unchanged.
if [ "$1" = "train" ]; then
    cd "${LAMBDA_TASK_ROOT}" && exec python3 -m training.sagemaker
fi
exec /lambda-entrypoint.sh "$@"
