"""A plain script that builds an ``LLM`` works without an ``if __name__ == "__main__"`` guard."""

import subprocess
import sys
import textwrap


def test_script_without_main_guard(tiny_model_dir, tmp_path):
    script = tmp_path / "generate.py"
    script.write_text(textwrap.dedent(f"""
        from pagedllm_core import LLM, SamplingParams

        llm = LLM(model={str(tiny_model_dir("LlamaForCausalLM"))!r})
        outputs = llm.generate(["Hello", "The quick brown fox"], SamplingParams(max_tokens=3, ignore_eos=True))
        print([len(output.outputs[0].token_ids) for output in outputs])
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[3, 3]"
