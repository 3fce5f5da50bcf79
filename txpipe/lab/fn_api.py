"""The FnApiRunner for a local bounded run, given the pipeline options as Beam's DirectRunner
gives them (its workers read them, ``--direct_num_workers`` say).

Naming the runner skips the DirectRunner's probe for IPython and its attempt at Prism (a
download that fails offline). What the DirectRunner does to hand over the options is Beam's
internals (2.77: ``SwitchingDirectRunner.run_pipeline``); tests/test_cli_startup.py fails
loudly if they move.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle


def fn_api_runner(options: PipelineOptions) -> fn_runner.FnApiRunner:
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))
