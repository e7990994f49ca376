from genpi.adapter import read_adapter_info
from genpi.llm import SamplingParams
from genpi.llm.local import LocalBackend


def test_tiny_adapter_changes_the_tiny_models_output(tiny_model_dir, tiny_adapter_dir):
    backend = LocalBackend.from_ref(str(tiny_model_dir), adapter=tiny_adapter_dir, dtype="fp32")
    conv = [{"role": "user", "content": "hello there"}]
    params = SamplingParams(max_new_tokens=8)
    (with_adapter,) = backend.generate([conv], params)
    with backend.adapter_disabled():
        (without,) = backend.generate([conv], params)
    assert with_adapter.text != without.text
    assert read_adapter_info(tiny_adapter_dir).base_model == str(tiny_model_dir)
