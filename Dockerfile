# Airflow image for a real deployment (Astro layout: /usr/local/airflow on Astro,
# /opt/airflow here). Scheduler, workers and triggerer only orchestrate: scoring
# runs on Azure Batch nodes or Azure ML compute. torch/ultralytics are still
# installed so that the scoring script can be run and tested in this image.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root requirements.txt constraints.txt /opt/airflow/
RUN pip install --no-cache-dir -r /opt/airflow/requirements.txt -c /opt/airflow/constraints.txt

COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root include/ /opt/airflow/include/

# The local stack (local_stack/: Azurite, our Batch service, our Azure ML endpoint, the demo)
# is not the product and is not copied. DAGs import `include.*`; plugins (hooks, operators, triggers) are on the path of
# every component through the plugins folder.
ENV PYTHONPATH=/opt/airflow \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    YOLO_OFFLINE=1 \
    YOLO_AUTOINSTALL=False \
    YOLO_CONFIG_DIR=/tmp/yolo-config
