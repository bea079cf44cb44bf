from phi_lsp.settings import Settings, settings_from_client


def test_defaults_and_camel_case_keys() -> None:
    settings, errors = Settings().merge({"maxNewTokens": 32, "nThreads": 2, "gpuLayers": 0})
    assert errors == []
    assert (settings.max_new_tokens, settings.n_threads, settings.gpu_layers) == (32, 2, 0)
    assert settings.model == "phi-1" and settings.backend == "auto"


def test_bad_value_is_reported_by_name_and_the_old_value_stays() -> None:
    before, _ = Settings().merge({"maxNewTokens": 40})
    after, errors = before.merge({"maxNewTokens": "lots", "temperature": 0.5})
    assert after.max_new_tokens == 40
    assert after.temperature == 0.5  # the good key in the same message still applies
    assert len(errors) == 1
    assert "phiLsp.maxNewTokens" in errors[0] and "previous value" in errors[0]


def test_out_of_range_and_unknown_keys_are_rejected() -> None:
    settings, errors = Settings().merge(
        {"backend": "tensorflow", "temprature": 1, "maxNewTokens": 0}
    )
    assert settings == Settings()
    assert [e.split(" ")[0] for e in errors] == [
        "phiLsp.backend",
        "phiLsp.temprature",
        "phiLsp.maxNewTokens",
    ]
    assert "unknown setting" in errors[1]


def test_engine_changed_only_for_engine_keys() -> None:
    base = Settings()
    assert not base.merge({"maxNewTokens": 10, "enable": False})[0].engine_changed(base)
    assert base.merge({"model": "/x.gguf"})[0].engine_changed(base)
    assert base.merge({"contextTokens": 1024})[0].engine_changed(base)


def test_settings_from_client_accepts_section_or_wrapper() -> None:
    assert settings_from_client({"phiLsp": {"model": "a"}}) == {"model": "a"}
    assert settings_from_client({"model": "a"}) == {"model": "a"}
    assert settings_from_client(None) == {} and settings_from_client([1]) == {}
