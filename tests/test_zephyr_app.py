"""The Zephyr/WAMR application (firmware/ports/zephyr): what can be checked without Zephyr or
WAMR.

Neither Zephyr nor WAMR can be installed here (../shared/notes/feasibility.md), so the
application is never built by these tests. They check instead:

- the west manifest pins Zephyr v4.3.0 and WAMR-2.4.3 and clones into an ignored directory;
- prj.conf and boards/*.conf are well-formed Kconfig fragments with the required options, and
  every application option they or the sources use is declared in the application's Kconfig;
- the mbedTLS configuration the image names is the proven TLS 1.3-only one, and it passes
  mbedTLS 3.6's own consistency checks (check_config.h) with the pinned mbedTLS sources;
- the core is a Zephyr module (firmware/core/zephyr/module.yml) that the application adds and
  enables, and the source lists exist once: core/, app/ and runtime/common/ each have a
  sources.txt that make (sources.mk) and CMake (sources.cmake) read the same way (both are
  run here on them), and no build file lists those sources again;
- every function the core and the board-independent application (firmware/app) need
  (runtime.h, platform.h, transport.h members, the app/board.h functions they call, crypto.h's
  entropy hooks) is defined in the sources the application compiles, and no bare-metal port
  source is among them;
- the board overlays choose a transport UART (chosen node wasmbed,transport-uart) that exists,
  is not the console, and is enabled; the per-device blob has a place on every board;
- the portable half of the WAMR runtime (runtime/wamr/wamr_portable.c: WAMR exception -> outcome
  mapping, on top of runtime/common/wb_wasm_scan.c: module scan, argument conversion, wording,
  the unit the wasm3 runtime uses too) compiles with -Wall -Wextra -Werror for the host
  (ASan/UBSan) and for Cortex-M3, passes its C unit checks, and gives the wasm3 runtime's
  answers on the project's test modules.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime
import yaml

from wasmbed_hil.bench import modules

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware"
APP = FW / "ports" / "zephyr"  # the Zephyr application
SRC = APP / "src"
FW_APP = FW / "app"  # the board-independent application both images compile
MPS2 = FW / "ports" / "mps2-an385"  # the bare-metal port
COMMON = FW / "runtime" / "common"
WAMR = FW / "runtime" / "wamr"
CORE = FW / "core"
MODULE = CORE / "zephyr"  # the core's Zephyr module files
CORE_INCLUDE = CORE / "include"
MBEDTLS_DIR = ROOT / ".cache" / "firmware-deps" / "mbedtls"

# Outcome numbers of firmware/core/include/wb/types.h
RETURNED, TRAPPED, OUT_OF_FUEL, OUT_OF_MEMORY, TIMED_OUT, STOPPED, LOAD_FAILED = range(7)

# Zephyr board file stem -> (transport UART label, the console UART of the board's own .dts).
# Consoles as read in Zephyr's board files: stm32f4_disco.dts (usart2), stm32f746g_disco.dts
# (usart1), nrf52840dk_nrf52840.dts (uart0), mps2_an385.dts (uart0).
BOARDS = {
    "stm32f4_disco": ("usart3", "usart2"),
    "stm32f746g_disco": ("usart6", "usart1"),
    "nrf52840dk_nrf52840": ("uart1", "uart0"),
    "mps2_an385": ("uart1", "uart0"),
}


# ---------------------------------------------------------------------------------------------
# helpers


def _strip_c_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _conf_lines(path: Path) -> list[tuple[int, str]]:
    lines = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append((number, line))
    return lines


def _conf(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for _, line in _conf_lines(path))


def _cmake_text(path: Path) -> str:
    return re.sub(r"#[^\n]*", " ", path.read_text())


def _cmake_list(name: str) -> list[str]:
    match = re.search(rf"set\({name}\s+(.*?)\)", _cmake_text(APP / "CMakeLists.txt"),
                      flags=re.S)
    assert match, f"CMakeLists.txt sets no {name}"
    return match.group(1).split()


def _resolve(item: str) -> Path:
    for var, value in {"${WB_FW}": FW, "${WB_APP}": FW_APP, "${WB_WAMR}": WAMR}.items():
        item = item.replace(var, str(value))
    return Path(item) if Path(item).is_absolute() else APP / item


def _list_file(directory: Path) -> list[Path]:
    """The sources of directory/sources.txt, read as sources.mk and sources.cmake read it."""
    lines = [line.strip() for line in (directory / "sources.txt").read_text().splitlines()]
    return [directory / line for line in lines if line and not line.startswith("#")]


def _listed_sources(name: str) -> list[Path]:
    """The sources CMakeLists.txt reads with wasmbed_sources(name <dir>) (sources.cmake)."""
    match = re.search(rf"wasmbed_sources\({name}\s+(\S+)\)", _cmake_text(APP / "CMakeLists.txt"))
    assert match, f"CMakeLists.txt reads no list into {name}"
    return _list_file(_resolve(match.group(1)))


def _compiled_sources() -> dict[str, list[Path]]:
    return {
        "core": _list_file(CORE),  # through the module (module.yml, CONFIG_WASMBED_CORE)
        "app": _listed_sources("WB_APP_SRCS"),
        "common": _listed_sources("WB_RUNTIME_COMMON_SRCS"),
        "wamr": [_resolve(i) for i in _cmake_list("WB_WAMR_SRCS")],
        "zephyr": [_resolve(i) for i in _cmake_list("WB_ZEPHYR_SRCS")],
    }


def _declared_functions(header: Path) -> set[str]:
    """Names of the functions a header declares (prototypes at file scope)."""
    text = _strip_c_comments(header.read_text())
    text = re.sub(r"^\s*#.*$", " ", text, flags=re.M)
    names = set()
    for match in re.finditer(r"\b([A-Za-z_]\w*)\s*\(([^;{}()]|\([^;{}()]*\))*\)\s*"
                             r"(?:__attribute__\s*\(\(.*?\)\)\s*)?;", text, flags=re.S):
        before = text[: match.start()].rstrip()
        if before.endswith(("(", ",", "=")) or match.group(1) in {"sizeof", "return"}:
            continue
        if re.search(r"\(\s*\*\s*$", before):  # a function pointer member
            continue
        names.add(match.group(1))
    return names


def _defined_functions(paths: list[Path]) -> set[str]:
    """Names of the functions defined in C sources: NAME(...) followed by a body."""
    names = set()
    for path in paths:
        text = _strip_c_comments(path.read_text())
        for match in re.finditer(r"\b([A-Za-z_]\w*)\s*\(", text):
            depth, i = 1, match.end()
            while i < len(text) and depth:
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            rest = text[i : i + 200]
            rest = re.sub(r"^\s*__attribute__\s*\(\(.*?\)\)", "", rest, flags=re.S)
            if re.match(r"\s*\{", rest) and match.group(1) not in {"if", "for", "while", "switch"}:
                names.add(match.group(1))
    return names


def _called_functions(paths: list[Path]) -> set[str]:
    names = set()
    for path in paths:
        text = _strip_c_comments(path.read_text())
        names.update(re.findall(r"\b([A-Za-z_]\w*)\s*\(", text))
    return names


# ---------------------------------------------------------------------------------------------
# west manifest


def _manifest() -> dict:
    return yaml.safe_load((APP / "west.yml").read_text())["manifest"]


def test_west_manifest_pins_zephyr_and_wamr() -> None:
    manifest = _manifest()
    remotes = {r["name"]: r["url-base"] for r in manifest["remotes"]}
    projects = {p["name"]: p for p in manifest["projects"]}
    assert set(projects) == {"zephyr", "wasm-micro-runtime"}

    zephyr = projects["zephyr"]
    assert zephyr["revision"] == "v4.3.0"
    assert remotes[zephyr["remote"]] == "https://github.com/zephyrproject-rtos"
    allow = set(zephyr["import"]["name-allowlist"])
    assert {"mbedtls", "hal_stm32", "hal_nordic"} <= allow
    assert allow & {"cmsis", "cmsis_6"}, "Cortex-M needs CMSIS"

    wamr = projects["wasm-micro-runtime"]
    assert wamr["revision"] == "WAMR-2.4.3"  # WAMR's tags are WAMR-X.Y.Z
    assert remotes[wamr["remote"]] == "https://github.com/bytecodealliance"
    # CMakeLists.txt finds WAMR next to the zephyr checkout: ${ZEPHYR_BASE}/../modules/lib/...
    zephyr_parent = Path(zephyr["path"]).parent
    assert Path(wamr["path"]) == zephyr_parent / "modules" / "lib" / "wasm-micro-runtime"
    assert zephyr["import"]["path-prefix"] == str(zephyr_parent)


def test_west_checkouts_stay_out_of_git() -> None:
    """`west init -l firmware/ports/zephyr` makes firmware/ports/ the workspace: clones must be
    ignored."""
    manifest = _manifest()
    paths = [p["path"] for p in manifest["projects"]]
    paths.append(manifest["projects"][0]["import"]["path-prefix"] + "/modules/hal/stm32")
    for path in paths:
        assert not Path(path).is_absolute() and ".." not in Path(path).parts
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    for path in paths:
        probe = subprocess.run(["git", "check-ignore", "-q", str(APP.parent / path / "x")],
                               cwd=ROOT)
        assert probe.returncode == 0, f"firmware/ports/{path} would not be ignored by git"
    probe = subprocess.run(["git", "check-ignore", "-q", str(APP.parent / ".west" / "config")],
                           cwd=ROOT)
    assert probe.returncode == 0, "west's firmware/ports/.west/ would not be ignored by git"


# ---------------------------------------------------------------------------------------------
# Kconfig fragments

CONF_LINE = re.compile(r'^CONFIG_[A-Z0-9_]+=(y|n|-?\d+|0x[0-9a-fA-F]+|"(?:[^"\\]|\\.)*")$')
CONF_FILES = [APP / "prj.conf", *sorted((APP / "boards").glob("*.conf"))]


@pytest.mark.parametrize("path", CONF_FILES, ids=lambda p: p.name)
def test_conf_fragments_are_well_formed(path: Path) -> None:
    seen: dict[str, int] = {}
    for number, line in _conf_lines(path):
        assert CONF_LINE.match(line), f"{path.name}:{number}: malformed: {line}"
        name = line.split("=", 1)[0]
        assert name not in seen, f"{path.name}:{number}: {name} also set on line {seen[name]}"
        seen[name] = number


def test_prj_conf_has_what_the_sources_rely_on() -> None:
    conf = _conf(APP / "prj.conf")
    required = {
        "CONFIG_SERIAL": "y",
        "CONFIG_UART_INTERRUPT_DRIVEN": "y",  # uart_irq_* + uart_fifo_read in the ISR
        "CONFIG_CONSOLE": "y",
        "CONFIG_UART_CONSOLE": "y",
        "CONFIG_RING_BUFFER": "y",  # ring_buf_* for the transport RX
        "CONFIG_ENTROPY_GENERATOR": "y",  # sys_csrand_get on the board RNG
        "CONFIG_MBEDTLS": "y",
        "CONFIG_MBEDTLS_BUILTIN": "y",
        "CONFIG_CUSTOM_MBEDTLS_CFG_FILE": "y",
        "CONFIG_MBEDTLS_CFG_FILE": '"wb_zephyr_mbedtls_config.h"',
        "CONFIG_THREAD_STACK_INFO": "y",  # WAMR's native stack bound on Zephyr
        "CONFIG_REBOOT": "y",  # sys_reboot
    }
    for name, value in required.items():
        assert conf.get(name) == value, f"prj.conf: {name} should be {value}"
    # With a custom mbedTLS configuration file, Zephyr's generated configuration and its
    # options are not used: setting them would only mislead.
    generated = [n for n in conf if re.match(r"CONFIG_MBEDTLS_(SSL_PROTO|TLS_VERSION|ECP_|"
                                              r"CIPHER_|MAC_|KEY_EXCHANGE)", n)]
    assert generated == []


def _kconfig_symbols() -> dict[str, str]:
    """The application's options and the core module's (CONFIG_WASMBED_CORE)."""
    text = (APP / "Kconfig").read_text() + (MODULE / "Kconfig").read_text()
    symbols = {}
    for match in re.finditer(r"^config (\w+)\n\t(bool|int|hex|string)", text, flags=re.M):
        symbols[match.group(1)] = match.group(2)
    return symbols


def test_application_options_are_declared_in_kconfig() -> None:
    symbols = _kconfig_symbols()
    used: set[str] = set()
    for path in CONF_FILES:
        used.update(n[len("CONFIG_"):] for n in _conf(path) if n.startswith("CONFIG_WASMBED_"))
    for path in [*SRC.glob("*.c"), *SRC.glob("*.h"), *WAMR.glob("*.c"), APP / "CMakeLists.txt",
                 MODULE / "CMakeLists.txt"]:
        used.update(re.findall(r"CONFIG_(WASMBED_[A-Z0-9_]*[A-Z0-9])\b", path.read_text()))
    undeclared = sorted(used - set(symbols))
    assert undeclared == [], f"used but not in Kconfig: {undeclared}"
    unused = sorted(set(symbols) - used)
    assert unused == [], f"declared in Kconfig but used nowhere: {unused}"
    for path in CONF_FILES:  # values of the right kind
        for name, value in _conf(path).items():
            kind = symbols.get(name[len("CONFIG_"):])
            if kind == "int":
                assert re.fullmatch(r"-?\d+", value), f"{path.name}: {name}={value}"
            elif kind == "hex":
                assert re.fullmatch(r"0x[0-9a-fA-F]+", value), f"{path.name}: {name}={value}"
            elif kind == "bool":
                assert value in ("y", "n"), f"{path.name}: {name}={value}"
    assert (APP / "Kconfig").read_text().rstrip().endswith('source "Kconfig.zephyr"')


# ---------------------------------------------------------------------------------------------
# mbedTLS configuration


def _defines(path: Path) -> set[str]:
    return set(re.findall(r"^\s*#define\s+(MBEDTLS_\w+)", path.read_text(), flags=re.M))


def test_mbedtls_configuration_is_the_proven_tls13_client() -> None:
    name = _conf(APP / "prj.conf")["CONFIG_MBEDTLS_CFG_FILE"].strip('"')
    wrapper = SRC / "mbedtls" / name
    proven = FW / "mbedtls" / "wb_mbedtls_config.h"
    assert '#include "wb_mbedtls_config.h"' in wrapper.read_text()
    defines = _defines(wrapper) | _defines(proven)
    assert {
        "MBEDTLS_SSL_PROTO_TLS1_3",
        "MBEDTLS_SSL_CLI_C",
        "MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ENABLED",
        "MBEDTLS_ECDSA_C",
        "MBEDTLS_X509_CRT_PARSE_C",
        "MBEDTLS_PSA_CRYPTO_C",
        "MBEDTLS_ENTROPY_HARDWARE_ALT",  # mbedtls_hardware_poll: src/platform_zephyr.c
        "MBEDTLS_MEMORY_BUFFER_ALLOC_C",  # its heap: src/main.c
        "MBEDTLS_PLATFORM_MEMORY",
    } <= defines
    assert not defines & {"MBEDTLS_SSL_PROTO_TLS1_2", "MBEDTLS_SSL_SRV_C", "MBEDTLS_NET_C"}


@pytest.fixture(scope="session")
def mbedtls_include() -> Path:
    """The pinned mbedTLS 3.6 headers (firmware/deps.lock), fetched if needed."""
    include = MBEDTLS_DIR / "include"
    if not (include / "mbedtls" / "build_info.h").exists():
        fetch = subprocess.run([sys.executable, str(FW / "scripts" / "fetch_deps.py")],
                               capture_output=True, text=True, timeout=600)
        if fetch.returncode != 0 or not (include / "mbedtls" / "build_info.h").exists():
            pytest.skip(f"mbedTLS sources unavailable (fetch_deps.py): {fetch.stderr[-300:]}")
    return include


def test_mbedtls_configuration_passes_mbedtls_own_checks(tmp_path: Path,
                                                         mbedtls_include: Path) -> None:
    """check_config.h of the pinned mbedTLS 3.6 accepts the configuration (Zephyr 4.3 ships
    mbedTLS 3.6 too)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    include = mbedtls_include
    probe = tmp_path / "probe.c"
    probe.write_text(
        '#include "mbedtls/build_info.h"\n'
        '#include "mbedtls/ssl.h"\n'
        '#include "mbedtls/memory_buffer_alloc.h"\n'
        '#include "psa/crypto.h"\n'
        "#if !defined(MBEDTLS_SSL_PROTO_TLS1_3) || defined(MBEDTLS_SSL_PROTO_TLS1_2)\n"
        '#error "not TLS 1.3 only"\n'
        "#endif\n"
        "int main(void) { return 0; }\n"
    )
    proc = subprocess.run(
        ["gcc", "-std=c11", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
         "-DMBEDTLS_CONFIG_FILE=\"wb_zephyr_mbedtls_config.h\"",
         f"-I{SRC / 'mbedtls'}", f"-I{FW / 'mbedtls'}", f"-I{include}", str(probe)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


# ---------------------------------------------------------------------------------------------
# CMake: the core as a Zephyr module, every source list once, the application's sources


def test_the_core_is_a_zephyr_module_the_application_adds() -> None:
    """core/zephyr/module.yml in the format Zephyr's scripts/zephyr_module.py validates (name;
    build.cmake: a directory holding a CMakeLists.txt; build.kconfig: a file), built only when
    enabled, added by the application before find_package(Zephyr) and enabled in prj.conf."""
    meta = yaml.safe_load((MODULE / "module.yml").read_text())
    assert set(meta) <= {"name", "build"} and set(meta["build"]) <= {"cmake", "kconfig"}
    assert isinstance(meta["name"], str) and re.fullmatch(r"[a-z][a-z0-9-]*", meta["name"])
    module_cmake = CORE / meta["build"]["cmake"] / "CMakeLists.txt"
    assert module_cmake.is_file()
    kconfig = (CORE / meta["build"]["kconfig"]).read_text()
    assert re.search(r"^config WASMBED_CORE\n\tbool ", kconfig, flags=re.M)

    text = _cmake_text(module_cmake)
    assert re.match(r"\s*if\(NOT CONFIG_WASMBED_CORE\)\s*return\(\)\s*endif\(\)", text)
    assert "zephyr_library_named(wasmbed_core)" in text
    assert "zephyr_library_sources(${WB_CORE_SRCS})" in text
    # the public headers reach the application; zcbor stays the library's
    assert "zephyr_include_directories(${WB_CORE_DIR}/include)" in text
    for header in CORE_INCLUDE.glob("wb/*.h"):
        assert not re.search(r'#include\s*[<"]zcbor', header.read_text()), header.name

    app = _cmake_text(APP / "CMakeLists.txt")
    assert "get_filename_component(WB_FW ${CMAKE_CURRENT_SOURCE_DIR}/../.. ABSOLUTE)" in app
    added = re.search(r"list\(APPEND EXTRA_ZEPHYR_MODULES (\S+)\)", app)
    assert added and _resolve(added.group(1)) == CORE
    assert added.start() < app.index("find_package(Zephyr REQUIRED")  # modules are found there
    assert _conf(APP / "prj.conf")["CONFIG_WASMBED_CORE"] == "y"


def test_the_module_passes_the_cores_defines() -> None:
    text = (CORE / "core.mk").read_text()
    cflags = re.search(r"^CORE_CFLAGS\s*:=(.*)$", text, flags=re.M)
    assert cflags
    defs = re.search(r"zephyr_library_compile_definitions\(([^)]*)\)",
                     _cmake_text(MODULE / "CMakeLists.txt"))
    assert defs, "the core's defines are not passed"
    assert {f[2:] for f in cflags.group(1).split() if f.startswith("-D")} == set(
        defs.group(1).split())


LISTED = [CORE, FW_APP, COMMON]  # the portable directories with a sources.txt
BUILD_FILES = [CORE / "core.mk", MODULE / "CMakeLists.txt", APP / "CMakeLists.txt",
               FW / "Makefile", FW / "runtime" / "wasm3" / "wasm3.mk", FW / "sources.mk",
               FW / "sources.cmake", *sorted(FW.glob("ports/*/board.mk"))]


def test_no_build_file_lists_a_listed_source_again() -> None:
    """The lists exist once, in sources.txt: no Makefile or CMake file names their sources
    (the core's list used to be in core.mk and the Zephyr CMakeLists.txt, held equal by a
    test)."""
    listed = {p.name for directory in LISTED for p in _list_file(directory)}
    assert {"codec.c", "app.c", "wb_wasm_scan.c"} <= listed
    for path in BUILD_FILES:
        named = set(re.findall(r"[\w.-]+\.c\b", re.sub(r"#[^\n]*", " ", path.read_text())))
        assert not named & listed, f"{path.relative_to(ROOT)} names {sorted(named & listed)}"
    assert re.search(r"^CORE_SRCS := \$\(call wb_sources,\$\(WB_CORE_DIR\)\)$",
                     (CORE / "core.mk").read_text(), flags=re.M)
    assert "wasmbed_sources(WB_CORE_SRCS ${WB_CORE_DIR})" in _cmake_text(MODULE / "CMakeLists.txt")


def _make_values(tmp_path: Path, makefile_args: list[str], names: list[str]) -> dict[str, str]:
    """Variables as make sees them after reading the given makefiles (printed by a last -f)."""
    probe = tmp_path / "probe.mk"
    probe.write_text("wb-probe:\n" + "".join(f"\t@echo '{n}=$({n})'\n" for n in names))
    proc = subprocess.run(["make", "-s", *makefile_args, "-f", str(probe), "wb-probe"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


def _cmake_lists(tmp_path: Path, directories: list[Path]) -> list[list[Path]]:
    script = tmp_path / "probe.cmake"
    script.write_text(f"include({FW / 'sources.cmake'})\n" + "".join(
        f'wasmbed_sources(s {d})\nmessage("${{s}}")\n' for d in directories))
    proc = subprocess.run(["cmake", "-P", str(script)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [[Path(p) for p in line.split(";")] for line in proc.stderr.splitlines()]


def test_make_and_cmake_read_the_same_lists(tmp_path: Path) -> None:
    """sources.mk (make) and sources.cmake (the Zephyr module and application) run on every
    sources.txt give the same files, and so do the variables the makefiles build from."""
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    for directory in LISTED:
        assert all(p.is_file() for p in _list_file(directory)), directory
    quirks = tmp_path / "quirks"  # comment lines, blank lines, indentation, a subdirectory
    quirks.mkdir()
    (quirks / "sources.txt").write_text("# a comment\n\n  a.c\n\t# b.c\nsub/c.c  \n#d.c\n")
    expected = [*map(_list_file, LISTED), [quirks / "a.c", quirks / "sub" / "c.c"]]

    probe = tmp_path / "lists.mk"
    probe.write_text(f"include {FW / 'sources.mk'}\n" + "".join(
        f"L{i} := $(call wb_sources,{d})\n" for i, d in enumerate([*LISTED, quirks])))
    made = _make_values(tmp_path, ["-f", str(probe)], [f"L{i}" for i in range(len(expected))])
    assert [[Path(p) for p in made[f"L{i}"].split()] for i in range(len(expected))] == expected

    core = _make_values(tmp_path, ["-f", str(CORE / "core.mk")], ["CORE_SRCS"])
    assert [Path(p) for p in core["CORE_SRCS"].split()] == _list_file(CORE)
    wasm3 = _make_values(tmp_path, ["DEPS=/nowhere", "-f", str(FW / "runtime/wasm3/wasm3.mk")],
                         ["WASM3_COMMON_SRCS"])
    assert [Path(p).resolve() for p in wasm3["WASM3_COMMON_SRCS"].split()] == _list_file(COMMON)
    image = _make_values(tmp_path, ["-C", str(FW), "-f", "Makefile", "WB_DEPS_DONE=1",
                                    f"BUILD_DIR={tmp_path / 'build'}"], ["TARGET_SRCS"])
    board = _make_values(tmp_path, ["-f", str(MPS2 / "board.mk")], ["BOARD_SRCS"])
    ported = [MPS2 / name for name in board["BOARD_SRCS"].split()]
    assert {p.name for p in ported} == {"main.c", "board.c", "entropy.c", "eth.c"}
    assert [Path(p) for p in image["TARGET_SRCS"].split()] == ported + _list_file(FW_APP)

    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed: sources.cmake not run")
    assert _cmake_lists(tmp_path, [*LISTED, quirks]) == expected


def test_cmake_compiles_every_source_of_the_application() -> None:
    sources = _compiled_sources()
    for group in sources.values():
        for path in group:
            assert path.is_file(), path
    assert sorted(p.name for p in sources["zephyr"]) == sorted(p.name for p in SRC.glob("*.c"))
    assert sorted(p.name for p in sources["wamr"]) == sorted(p.name for p in WAMR.glob("*.c"))
    assert all(p.parent == FW_APP for p in sources["app"])
    assert all(p.parent == COMMON for p in sources["common"])
    text = _cmake_text(APP / "CMakeLists.txt")
    assert "find_package(Zephyr REQUIRED" in text
    assert re.search(r"target_sources\(app PRIVATE \$\{WB_APP_SRCS\} \$\{WB_RUNTIME_COMMON_SRCS\}"
                     r" \$\{WB_WAMR_SRCS\}\s+\$\{WB_ZEPHYR_SRCS\}\)", text)
    for option in ("WAMR_BUILD_INSTRUCTION_METERING 1", "WAMR_BUILD_THREAD_MGR 1",
                   "WAMR_BUILD_INTERP 1", "WAMR_BUILD_FAST_INTERP 0", "WAMR_BUILD_AOT 0",
                   'WAMR_BUILD_PLATFORM "zephyr"'):
        assert f"set({option})" in text, option
    assert "runtime_lib.cmake" in text and "${WAMR_RUNTIME_LIB_SOURCE}" in text


def _macros(header: Path) -> set[str]:
    return set(re.findall(r"^#define (WB_\w+)", header.read_text(), flags=re.M))


def test_interface_functions_are_defined_in_the_compiled_sources() -> None:
    sources = _compiled_sources()
    port_srcs = sources["zephyr"] + sources["wamr"]
    app = sources["app"] + port_srcs
    compiled = [p.resolve() for group in sources.values() for p in group]
    assert not [p for p in compiled if MPS2 in p.parents], "a bare-metal port source"
    defined = _defined_functions(app)
    zephyr_defined = _defined_functions(port_srcs)

    runtime = _declared_functions(CORE_INCLUDE / "wb" / "runtime.h")
    assert runtime == {"wb_runtime_validate", "wb_runtime_run"}
    assert runtime <= _defined_functions(sources["wamr"])

    platform = _declared_functions(CORE_INCLUDE / "wb" / "platform.h")
    assert len(platform) == 8 and "wb_platform_sign" in platform
    assert platform <= defined, sorted(platform - defined)

    # the transport: every member of wb_transport_t is filled in by the compiled code
    members = re.findall(r"\(\*(\w+)\)\(", (CORE_INCLUDE / "wb" / "transport.h").read_text())
    assert set(members) == {"connect", "poll", "read", "write", "close", "last_rx_ms"}
    assigned = set()
    for path in app:
        assigned.update(re.findall(r"->(\w+)\s*=\s*t_\w+;", path.read_text()))
    assert set(members) <= assigned

    # the board API the application calls (app/board.h) is implemented by the Zephyr port,
    # and the port names what app/board.h asks of every port's board_port.h
    board = _declared_functions(FW_APP / "board.h")
    needed = board & _called_functions(sources["app"] + [SRC / "main.c"])
    assert {"board_now_ms", "uart_getc_nb", "uart_write", "board_link_last_rx_ms"} <= needed
    assert needed <= zephyr_defined, sorted(needed - zephyr_defined)
    asked = {"WB_UART0_BASE", "WB_UART1_BASE", "WB_BLOB_MAX_SIZE"}
    assert asked <= set(re.findall(r"\b(WB_\w+)\s{2,}", (FW_APP / "board.h").read_text()))
    for port in (SRC, MPS2):
        assert asked <= _macros(port / "board_port.h"), port

    # crypto.h hooks that the application's platform.c and mbedTLS expect from the port
    assert "wb_entropy_set_seed" in _called_functions([FW_APP / "platform.c"])
    assert {"wb_entropy_set_seed", "mbedtls_hardware_poll"} <= zephyr_defined

    # what the Zephyr port and the WAMR runtime give each other
    port = _declared_functions(SRC / "zephyr_port.h")
    assert port <= _defined_functions(sources["zephyr"]), sorted(port)
    wamr = _declared_functions(WAMR / "runtime_wamr.h")
    assert wamr <= _defined_functions([WAMR / "runtime_wamr.c"]), sorted(wamr)
    portable = _declared_functions(WAMR / "wamr_portable.h")
    assert portable <= _defined_functions([WAMR / "wamr_portable.c"])
    common = _declared_functions(COMMON / "wb_wasm_scan.h")
    assert common <= _defined_functions(sources["common"]), sorted(common)
    app_h = _declared_functions(FW_APP / "app.h")
    assert app_h <= _defined_functions([FW_APP / "app.c"]), sorted(app_h)

    # heartbeats during a run: the guard hook (in the device loop both images share, app.c)
    # is the core's service function
    app_c = _strip_c_comments((FW_APP / "app.c").read_text())
    hook = re.search(r"void wb_runtime_guard_hook\(void\)\s*\{(.*?)\}", app_c, flags=re.S)
    assert hook and "wb_device_service_during_run()" in hook.group(1)
    assert "wb_runtime_guard_hook" in _defined_functions(app)
    runtime_src = (WAMR / "runtime_wamr.c").read_text()
    for api in ("wasm_runtime_full_init", "Alloc_With_Pool", "wasm_runtime_load",
                "wasm_runtime_instantiate_ex", "wasm_runtime_create_exec_env",
                "wasm_runtime_lookup_function", "wasm_runtime_call_wasm_a",
                "wasm_runtime_get_exception", "wasm_runtime_set_instruction_count_limit",
                "wasm_runtime_terminate", "wasm_runtime_register_natives"):
        assert api in runtime_src, api


STUBS = APP / "tests" / "stubs"

# Kconfig values of three builds: (blob source, CPU, entropy) as on stm32f4_disco,
# mps2_an385 and stm32f746g_disco.
STUB_BUILDS = {
    "partition": ["WASMBED_BLOB_FROM_PARTITION=1", "CPU_CORTEX_M4=1", "CSPRNG_ENABLED=1"],
    "ram": ["WASMBED_BLOB_FROM_RAM=1", "WASMBED_BLOB_RAM_ADDRESS=0x203FC000",
            "CPU_CORTEX_M3=1", "TEST_RANDOM_GENERATOR=1", "WASMBED_USE_CCM=1"],
    "builtin": ["WASMBED_BLOB_BUILTIN=1", "CPU_CORTEX_M7=1", "CSPRNG_ENABLED=1"],
}  # fmt: skip


def _kconfig_defaults() -> list[str]:
    """CONFIG_WASMBED_* int/string options with their Kconfig defaults."""
    text = (APP / "Kconfig").read_text()
    values = []
    for match in re.finditer(r"^config (\w+)\n\t(int|string) .*?\n(?:\t.*\n)*?\tdefault (\S+)",
                             text, flags=re.M):
        values.append(f"{match.group(1)}={match.group(3)}")
    return values


def _app_definitions() -> list[str]:
    """What CMakeLists.txt defines for the app target (its WAMR sources included)."""
    found = re.findall(r"target_compile_definitions\(app PRIVATE ([^)]*)\)",
                       _cmake_text(APP / "CMakeLists.txt"))
    return [d for group in found for d in group.split()]


def test_wamr_keeps_the_whole_auxiliary_stack_for_the_run() -> None:
    # issue 13 item 8: with the thread manager on, WAMR-2.4.3's wasm_cluster_create gives the
    # main instance aux_stack_size / (CLUSTER_MAX_THREAD_NUM + 1) unless aux stacks come from
    # the heap; a C module using 20000 of its 64512 stack bytes trapped. The build sets it and
    # runtime_wamr.c refuses to compile without it.
    assert "WASM_ENABLE_HEAP_AUX_STACK_ALLOCATION=1" in _app_definitions()
    source = (WAMR / "runtime_wamr.c").read_text()
    assert re.search(r"#if !defined\(WASM_ENABLE_HEAP_AUX_STACK_ALLOCATION\) \|\| "
                     r"WASM_ENABLE_HEAP_AUX_STACK_ALLOCATION == 0\n#error", source)


@pytest.mark.parametrize("build", sorted(STUB_BUILDS))
def test_the_zephyr_layer_type_checks_against_stub_headers(tmp_path: Path, build: str,
                                                           mbedtls_include: Path) -> None:
    """arm-none-eabi-gcc -fsyntax-only -Werror over every source the application compiles
    but the core (the port, the WAMR runtime, the board-independent application, the runtimes'
    common half), with stub Zephyr/WAMR headers (tests/stubs: the APIs as read, not the real
    headers) and the include path of CMakeLists.txt. Catches C errors in code that cannot be
    built here; says nothing about the real APIs."""
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc not installed")
    autoconf = tmp_path / "autoconf.h"
    defines = [*_kconfig_defaults(), *STUB_BUILDS[build], 'BOARD="stub"', 'ARCH="arm"']
    autoconf.write_text("".join(f"#define CONFIG_{d.replace('=', ' ', 1)}\n" for d in defines))
    (tmp_path / "wb_blob.inc").write_text("0x57, 0x42, 0x4c, 0x42,\n")
    sources = _compiled_sources()
    flags = ["-std=gnu11", "-mcpu=cortex-m4", "-mthumb", "--specs=picolibc.specs",
             "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-imacros", str(autoconf),
             "-DWASM_ENABLE_INSTRUCTION_METERING=1", "-DWASM_ENABLE_THREAD_MGR=1",
             *(f"-D{d}" for d in _app_definitions()),
             '-DMBEDTLS_CONFIG_FILE="wb_zephyr_mbedtls_config.h"', f"-I{tmp_path}",
             f"-I{STUBS}", f"-I{SRC}", f"-I{FW_APP}", f"-I{COMMON}", f"-I{WAMR}",
             f"-I{CORE_INCLUDE}", f"-I{SRC / 'mbedtls'}", f"-I{FW / 'mbedtls'}",
             f"-I{mbedtls_include}"]  # fmt: skip
    if build != "partition":
        flags.append("-DSTUB_NO_BLOB_PARTITION")
    for path in sources["zephyr"] + sources["wamr"] + sources["app"] + sources["common"]:
        proc = subprocess.run(["arm-none-eabi-gcc", *flags, str(path)], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, f"{path.name}:\n{proc.stderr[-3000:]}"


# ---------------------------------------------------------------------------------------------
# board overlays


def _chosen(overlay: str) -> dict[str, str]:
    block = re.search(r"chosen\s*\{(.*?)\};", overlay, flags=re.S)
    assert block, "no /chosen block"
    return dict(re.findall(r"([\w,-]+)\s*=\s*&(\w+)\s*;", block.group(1)))


def _node_block(overlay: str, label: str) -> str | None:
    match = re.search(rf"&{label}\s*\{{(.*?)\n\}};", overlay, flags=re.S)
    return match.group(1) if match else None


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_board_overlay_chooses_a_transport_uart(board: str) -> None:
    overlay_path = APP / "boards" / f"{board}.overlay"
    overlay = _strip_c_comments(overlay_path.read_text())
    assert overlay.count("{") == overlay.count("}"), "unbalanced braces"
    for line in overlay.splitlines():  # every property ends with ';'
        if "=" in line:
            assert line.rstrip().endswith(";"), line
    chosen = _chosen(overlay)
    transport, console = BOARDS[board]
    assert chosen.get("wasmbed,transport-uart") == transport
    assert transport != console
    assert "zephyr,console" not in chosen  # the console stays the board's own
    if board != "mps2_an385":  # mps2's UARTs carry no status: enabled by default
        block = _node_block(overlay, transport)
        assert block and 'status = "okay"' in block, f"&{transport} is not enabled"
        assert chosen.get("zephyr,entropy") == "rng"
        rng = _node_block(overlay, "rng")
        assert rng and 'status = "okay"' in rng
    assert (APP / "boards" / f"{board}.conf").is_file()


# STM32 flash sectors (offsets from the flash base, KiB) where a blob partition may start.
STM32F4_SECTORS = [0, 16, 32, 48, 64, *range(128, 1024, 128)]
STM32F7_SECTORS = [0, 32, 64, 96, 128, 256, 512, 768]


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_every_board_has_a_place_for_the_blob(board: str) -> None:
    overlay = _strip_c_comments((APP / "boards" / f"{board}.overlay").read_text())
    conf = _conf(APP / "boards" / f"{board}.conf")
    chosen = _chosen(overlay)
    mps2_h = (MPS2 / "board_port.h").read_text()
    blob_address = int(re.search(r"WB_BLOB_ADDRESS (0x[0-9A-Fa-f]+)u", mps2_h).group(1), 16)
    # what the Zephyr image reads at most: the bare-metal image's blob region
    blob_max = int(re.search(r"WB_BLOB_MAX_SIZE (0x[0-9A-Fa-f]+)u",
                             (SRC / "board_port.h").read_text()).group(1), 16)
    assert blob_max == int(re.search(r"WB_BLOB_MAX_SIZE (0x[0-9A-Fa-f]+)u", mps2_h).group(1), 16)
    if board == "mps2_an385":
        # the bare-metal image's blob address, kept out of the RAM Zephyr links into
        assert conf["CONFIG_WASMBED_BLOB_FROM_RAM"] == "y"
        assert int(conf["CONFIG_WASMBED_BLOB_RAM_ADDRESS"], 16) == blob_address
        sram = re.search(r"&sram0\s*\{\s*reg\s*=\s*<(0x[0-9a-f]+)\s+(0x[0-9a-f]+)>;", overlay)
        assert sram, "sram0 must be shrunk to exclude the blob"
        start, size = int(sram.group(1), 16), int(sram.group(2), 16)
        assert start + size == blob_address and blob_address + blob_max == 0x20400000
        assert conf["CONFIG_TEST_RANDOM_GENERATOR"] == "y"  # no TRNG, said at boot
        return
    assert "wasmbed,blob-partition" in chosen
    assert "CONFIG_WASMBED_BLOB_FROM_RAM" not in conf
    label = chosen["wasmbed,blob-partition"]
    if board == "nrf52840dk_nrf52840":
        assert label == "storage_partition"  # nrf52840_partition.dtsi: 0xf8000, 32 KiB
        return
    part = re.search(rf"{label}:\s*partition@([0-9a-f]+)\s*\{{.*?reg\s*=\s*<0x([0-9a-f]+)\s+"
                     rf"DT_SIZE_K\((\d+)\)>;", overlay, flags=re.S)
    assert part, f"partition {label} not defined"
    offset = int(part.group(2), 16)
    assert int(part.group(1), 16) == offset
    assert int(part.group(3)) * 1024 >= blob_max
    sectors = STM32F4_SECTORS if board == "stm32f4_disco" else STM32F7_SECTORS
    assert offset // 1024 in sectors and offset + blob_max <= 1024 * 1024


# ---------------------------------------------------------------------------------------------
# the portable half of the WAMR runtime, compiled and run here

# the WAMR runtime's portable half and the runtime-independent unit it shares with wasm3
PORTABLE_SRCS = [COMMON / "wb_wasm_scan.c", WAMR / "wamr_portable.c",
                 WAMR / "tests" / "test_wamr_portable.c"]
WARNINGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"]


@pytest.fixture(scope="session")
def portable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed: the portable runtime code cannot be built here")
    out = tmp_path_factory.mktemp("zephyr-portable") / "test_wamr_portable"
    proc = subprocess.run(
        ["gcc", *WARNINGS, "-O1", "-g", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", f"-I{CORE_INCLUDE}", f"-I{COMMON}", f"-I{WAMR}",
         *map(str, PORTABLE_SRCS), "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)


def _json(binary: Path, *args: str) -> dict:
    proc = _run(binary, *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_portable_unit_checks_pass(portable: Path) -> None:
    proc = _run(portable, "unit")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"wamr portable: (\d+) checks, 0 failed", proc.stdout)
    assert match and int(match.group(1)) >= 100
    assert "runtime error" not in proc.stderr and "AddressSanitizer" not in proc.stderr


@pytest.mark.parametrize("source", [COMMON / "wb_wasm_scan.c", WAMR / "wamr_portable.c"],
                         ids=lambda p: p.name)
def test_portable_code_builds_for_cortex_m(tmp_path: Path, source: Path) -> None:
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc not installed")
    proc = subprocess.run(
        ["arm-none-eabi-gcc", *WARNINGS, "-mcpu=cortex-m3", "-mthumb", "-Os",
         "--specs=picolibc.specs", f"-I{CORE_INCLUDE}", f"-I{COMMON}", "-c", str(source),
         "-o", str(tmp_path / f"{source.stem}.o")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


# WAMR's exception messages (core/iwasm: exception_msgs[], wasm_runtime_terminate) and what a
# run that raised them reports: outcome and detail (wasmtime's trap code first, as wasm3 does).
EXCEPTIONS = [
    ("unreachable", TRAPPED, "UNREACHABLE: unreachable"),
    ("out of bounds memory access", TRAPPED, "MEMORY_OUT_OF_BOUNDS: out of bounds memory access"),
    ("integer divide by zero", TRAPPED, "INTEGER_DIVISION_BY_ZERO: integer divide by zero"),
    ("integer overflow", TRAPPED, "INTEGER_OVERFLOW: integer overflow"),
    ("invalid conversion to integer", TRAPPED, "BAD_CONVERSION_TO_INTEGER: "),
    ("indirect call type mismatch", TRAPPED, "BAD_SIGNATURE: indirect call type mismatch"),
    ("undefined element", TRAPPED, "TABLE_OUT_OF_BOUNDS: undefined element"),
    ("uninitialized element", TRAPPED, "INDIRECT_CALL_TO_NULL: uninitialized element"),
    ("out of bounds table access", TRAPPED, "TABLE_OUT_OF_BOUNDS: "),
    ("native stack overflow", TRAPPED, "STACK_OVERFLOW: native stack overflow"),
    ("wasm operand stack overflow", TRAPPED, "STACK_OVERFLOW: wasm operand stack overflow"),
    ("wasm auxiliary stack overflow", TRAPPED, "STACK_OVERFLOW: "),
    ("unaligned atomic", TRAPPED, "HEAP_MISALIGNED: unaligned atomic"),
    ("instruction limit exceeded", OUT_OF_FUEL, "fuel budget of 1000 exhausted"),
    ("allocate memory failed", OUT_OF_MEMORY, "device heap of 131072 bytes exhausted"),
    ("allocate linear memory failed", OUT_OF_MEMORY, "device heap of 131072 bytes exhausted"),
    ("terminated by user", TRAPPED, "terminated by user"),  # nobody asked: not a stop
    ("failed to call unlinked import function (env, x)", TRAPPED, "failed to call unlinked"),
    ("something WAMR may add later", TRAPPED, "something WAMR may add later"),
]


@pytest.mark.parametrize(("message", "outcome", "detail"), EXCEPTIONS,
                         ids=[e[0][:32] for e in EXCEPTIONS])
def test_wamr_exceptions_map_to_outcomes(portable: Path, message: str, outcome: int,
                                         detail: str) -> None:
    result = _json(portable, "classify", f"exception=Exception: {message}", "fuel=1000")
    assert result["outcome"] == outcome
    assert result["detail"].startswith(detail)
    assert result["fuel_used"] == (1000 if outcome == OUT_OF_FUEL else 0)


def test_the_exception_table_has_one_entry_per_wamr_message(portable: Path) -> None:
    proc = _run(portable, "traps")
    table = [json.loads(line) for line in proc.stdout.splitlines()]
    needles = [t["needle"] for t in table]
    assert len(needles) == len(set(needles))
    assert {t["outcome"] for t in table} == {TRAPPED, OUT_OF_FUEL, OUT_OF_MEMORY}
    # the fuel and heap entries come before any trap whose needle they could contain
    assert needles.index("instruction limit exceeded") == 0


@pytest.mark.parametrize(
    ("args", "outcome", "detail"),
    [
        (["requested=4", "exception=Exception: terminated by user", "timeout_ms=200"], TIMED_OUT,
         "wall-clock budget of 200 ms exhausted"),
        (["requested=5", "exception=Exception: terminated by user"], STOPPED, "stopped on request"),
        (["requested=5", "started=0"], STOPPED, "stopped on request"),
        (["requested=4", "exception=Exception: unreachable"], TIMED_OUT, "wall-clock"),
        (["call_ok=1", "requested=5"], RETURNED, ""),
        (["exception=Exception: out of bounds memory access", "memory_exported=1",
          "memory_bytes=131072", "memory_limit=131072"], OUT_OF_MEMORY,
         "memory at 131072 bytes reached the limit of 131072, then MEMORY_OUT_OF_BOUNDS"),
        (["exception=Exception: out of bounds memory access", "memory_exported=1",
          "memory_bytes=65536", "memory_limit=1048576"], TRAPPED, "MEMORY_OUT_OF_BOUNDS"),
        (["exception=Exception: unreachable", "grow_refused=1", "memory_bytes=65536"],
         OUT_OF_MEMORY, "memory.grow beyond 65536 bytes failed: device heap"),
        (["exception=Exception: instruction limit exceeded", "fuel=5000000000"], OUT_OF_FUEL,
         "fuel budget of 5000000000 exhausted (WAMR counts at most 2147483647"),
    ],
)  # fmt: skip
def test_classification_of_how_a_run_ended(portable: Path, args: list[str], outcome: int,
                                           detail: str) -> None:
    result = _json(portable, "classify", *args)
    assert result["outcome"] == outcome
    assert result["detail"].startswith(detail)


@pytest.mark.parametrize(
    ("stage", "error", "outcome", "detail"),
    [
        ("load", "WASM module load failed: allocate memory failed", OUT_OF_MEMORY,
         "device heap of 65536 bytes exhausted loading the module"),
        ("load", "WASM module load failed: type mismatch", LOAD_FAILED,
         "invalid WebAssembly module: WASM module load failed: type mismatch"),
        ("instantiate", "allocate memory failed", OUT_OF_MEMORY,
         "device heap of 65536 bytes exhausted instantiating"),
        # WAMR-2.4.3 memory_instantiate(): the linear memory does not fit in the pool
        ("instantiate", "WASM module instantiate failed: allocate linear memory failed",
         OUT_OF_MEMORY, "device heap of 65536 bytes exhausted instantiating"),
        ("instantiate", "data segment does not fit", LOAD_FAILED, "instantiation failed: "),
    ],
)  # fmt: skip
def test_load_and_instantiation_failures(portable: Path, stage: str, error: str, outcome: int,
                                         detail: str) -> None:
    result = _json(portable, "load-failure", stage, error, "65536")
    assert result["outcome"] == outcome and result["detail"].startswith(detail)


def test_env_log_bounds(portable: Path) -> None:
    assert _json(portable, "log", "1", "65536", "65000", "536")["allowed"] is True
    out = _json(portable, "log", "1", "65536", "65000", "537")
    assert out["detail"] == "env.log: range [65000, 65537) is outside the memory of 65536 bytes"
    out = _json(portable, "log", "0", "65536", "0", "1")
    assert out["detail"] == "env.log: the module exports no memory named 'memory'"


@pytest.fixture(scope="session")
def wasm_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zephyr-wasm")
    for name in modules.names():
        (root / f"{name}.wasm").write_bytes(modules.build(name))
    extra = {
        "start": '(module (func $s unreachable) (start $s) (func (export "main")))',
        "log1": '(module (import "env" "log" (func (param i32))) (func (export "main")))',
        "envmem": '(module (import "env" "memory" (memory 1)) (func (export "main")))',
        "wasilog": '(module (import "wasi" "log" (func (param i32 i32))) (func (export "main")))',
        "table": '(module (import "env" "t" (table 1 funcref)) (func (export "main")))',
        "v128": '(module (func (export "main") (param v128)))',
    }
    for name, wat in extra.items():
        (root / f"{name}.wasm").write_bytes(wasmtime.wat2wasm(wat))
    (root / "garbage.wasm").write_bytes(b"\0asm\x01\0\0\0\x01\xff\xff\xff\xff\x0f")
    (root / "text.wasm").write_bytes(b"(module)")
    (root / "empty.wasm").write_bytes(b"")
    return root


# The wasm3 runtime's load-failure cases (tests/test_runtime_contract.py) give the same words.
@pytest.mark.parametrize(
    ("name", "entry", "args", "words"),
    [
        ("add", "nope", [], ["'nope'", "not exported", "main"]),
        ("hello", "memory", [], ["'memory'", "memory", "not a function"]),
        ("add", "main", ["1"], ["2 argument", "got 1"]),
        ("add", "main", ["1", "2", "3"], ["2 argument", "got 3"]),
        ("add", "main", ["f:1.5", "2"], ["argument 0", "int"]),
        ("add", "main", [str(2**32), "0"], ["argument 0", "does not fit in i32"]),
        ("imports_unknown", "main", [], ["env.nope", "unknown import"]),
        ("log1", "main", [], ["env.log", "(i32) -> ()", "expected"]),
        ("envmem", "main", [], ["env.memory", "memory", "unknown import"]),
        ("wasilog", "main", [], ["wasi.log", "unknown import"]),
        ("table", "main", [], ["env.t", "table", "unknown import"]),
        ("v128", "main", ["1"], ["parameter 0", "unsupported type"]),
        ("start", "main", [], ["start function"]),  # WAMR-specific, see README.md
        ("garbage", "main", [], ["invalid WebAssembly module"]),
        ("text", "main", [], ["WebAssembly", "text format"]),
        ("empty", "main", [], ["WebAssembly"]),
    ],
)  # fmt: skip
def test_load_failures_say_why_as_wasm3_does(portable: Path, wasm_files: Path, name: str,
                                             entry: str, args: list[str],
                                             words: list[str]) -> None:
    plan = _json(portable, "prepare", str(wasm_files / f"{name}.wasm"), entry, *args)
    assert plan["outcome"] == LOAD_FAILED
    for word in words:
        assert word in plan["detail"]


def test_invalid_bytes_fail_framing(portable: Path, wasm_files: Path) -> None:
    for name in ("garbage", "text", "empty"):
        framing = _json(portable, "framing", str(wasm_files / f"{name}.wasm"))
        assert framing["ok"] is False and framing["why"]
    for name in modules.names():
        assert _json(portable, "framing", str(wasm_files / f"{name}.wasm"))["ok"] is True


def test_plans_for_the_test_modules(portable: Path, wasm_files: Path) -> None:
    add = _json(portable, "prepare", str(wasm_files / "add.wasm"), "main", "1", "-1")
    assert add["outcome"] == RETURNED and add["detail"] == ""
    assert add["arg_types"] == [0, 0] and add["result_types"] == [0]
    assert add["arg_i64"] == [1, -1] and add["has_memory"] is False
    unsigned = _json(portable, "prepare", str(wasm_files / "add.wasm"), "main", str(2**32 - 1),
                     "0")
    assert unsigned["arg_i64"][0] == -1  # the unsigned form of an i32 is accepted

    swap = _json(portable, "prepare", str(wasm_files / "add.wasm"), "swap", "1", "2")
    assert swap["arg_types"] == [0, 1] and swap["result_types"] == [1, 0]

    hello = _json(portable, "prepare", "--memory", "131072", str(wasm_files / "hello.wasm"),
                  "main")
    assert hello["outcome"] == RETURNED
    assert hello["memory_exported"] and hello["imports_env_log"] and hello["has_memory"]
    assert hello["max_memory_pages"] == 2

    big = _json(portable, "prepare", "--memory", "65536", str(wasm_files / "big_memory.wasm"),
                "main")
    assert big["outcome"] == OUT_OF_MEMORY
    assert big["detail"] == "module declares 2097152 bytes of memory, limit is 65536"

    for fuel, limit in (("0", -1), ("1000", 1000), (str(2**40), 2**31 - 1)):
        fib = _json(portable, "prepare", "--fuel", fuel, str(wasm_files / "fib.wasm"), "fib",
                    "10")
        assert fib["instruction_limit"] == limit

    for name in modules.names():  # every test module's exports get a plan or a clear refusal
        plan = _json(portable, "prepare", str(wasm_files / f"{name}.wasm"), "main")
        assert plan["outcome"] in (RETURNED, LOAD_FAILED, OUT_OF_MEMORY)
        if plan["outcome"] != RETURNED:
            assert plan["detail"]


# ---------------------------------------------------------------------------------------------
# the memory limit written into the module (issue 13 item 7): WAMR 2.4.3 reads
# InstantiationArgs.max_memory_pages = 0 as "no override" (wasm_runtime_get_max_mem), so a limit
# below one page used to leave a (memory 0) module free to grow to 65536 pages. The adapter now
# lowers the memory's declared maximum in its copy of the module; whether the copy means what
# it should is checked here on wasmtime, which enforces declared maxima.

GROWER = wasmtime.wat2wasm("""
(module
  (memory (export "memory") 0)
  (func (export "main") (result i32)
    (drop (memory.grow (i32.const 1)))
    (memory.grow (i32.const 1))))
""")  # the second grow's result: -1 once the first has reached the maximum, else 1


def _patched(portable: Path, tmp_path: Path, wasm: bytes, max_pages: int) -> tuple[dict, Path]:
    src, dst = tmp_path / "in.wasm", tmp_path / "out.wasm"
    src.write_bytes(wasm)
    return _json(portable, "patch", str(max_pages), str(src), str(dst)), dst


def _grow_results(wasm: bytes) -> tuple[int, int]:
    """(first grow's result, second grow's result) of GROWER-like bytes on wasmtime."""
    store = wasmtime.Store()
    instance = wasmtime.Instance(store, wasmtime.Module(store.engine, wasm), [])
    memory = instance.exports(store)["memory"]
    second = instance.exports(store)["main"](store)
    return memory.size(store), second


def test_unpatched_grower_grows_unbounded_on_wasmtime() -> None:
    # the control: without a declared maximum nothing stops the grows
    assert _grow_results(GROWER) == (2, 1)


@pytest.mark.parametrize(("max_pages", "pages", "second"), [(0, 0, -1), (1, 1, -1), (2, 2, 1)])
def test_a_limit_becomes_the_memorys_maximum(portable: Path, tmp_path: Path, max_pages: int,
                                             pages: int, second: int) -> None:
    out, dst = _patched(portable, tmp_path, GROWER, max_pages)
    assert out["why"] == "" and out["len"] == dst.stat().st_size > len(GROWER)
    assert _grow_results(dst.read_bytes()) == (pages, second)


def test_a_limit_below_one_page_keeps_memory_at_zero_pages(portable: Path, tmp_path: Path) -> None:
    # the plan for a 32 KiB limit is a maximum of 0 pages, and the module still runs
    plan = _json(portable, "prepare", "--memory", "32768", _write(tmp_path, GROWER), "main")
    assert plan["outcome"] == RETURNED and plan["max_memory_pages"] == 0
    _, dst = _patched(portable, tmp_path, GROWER, plan["max_memory_pages"])
    assert _grow_results(dst.read_bytes()) == (0, -1)


def test_a_declared_maximum_within_the_limit_is_kept(portable: Path, tmp_path: Path) -> None:
    for name in modules.names():  # every test module still loads after the patch
        out, dst = _patched(portable, tmp_path, modules.build(name), 65535)
        assert out["why"] == "", name
        wasmtime.Module(wasmtime.Engine(), dst.read_bytes())
    bounded = wasmtime.wat2wasm('(module (memory 1 2) (func (export "main")))')
    out, dst = _patched(portable, tmp_path, bounded, 16)
    assert dst.read_bytes() == bounded


def test_a_minimum_above_the_limit_is_refused_before_patching(portable: Path,
                                                              tmp_path: Path) -> None:
    # the plan says OUT_OF_MEMORY first (the protocol's rule); the patch refuses on its own too
    one_page = wasmtime.wat2wasm('(module (memory 1) (func (export "main")))')
    plan = _json(portable, "prepare", "--memory", "32768", _write(tmp_path, one_page), "main")
    assert plan["outcome"] == OUT_OF_MEMORY
    assert plan["detail"] == "module declares 65536 bytes of memory, limit is 32768"
    out, _ = _patched(portable, tmp_path, one_page, 0)
    assert out["len"] == 0 and "minimum exceeds the memory limit" in out["why"]


@pytest.mark.parametrize("into", [1, 2, 3, 4])
def test_a_cut_memory_section_is_refused_with_a_reason(portable: Path, tmp_path: Path,
                                                       into: int) -> None:
    memory_section = GROWER.index(b"\x05\x03\x01\x00\x00")  # id, size 3, one memory, flags, min
    out, _ = _patched(portable, tmp_path, GROWER[: memory_section + into], 0)
    assert out["len"] == 0 and out["why"]


def _write(tmp_path: Path, wasm: bytes) -> str:
    path = tmp_path / "module.wasm"
    path.write_bytes(wasm)
    return str(path)


def test_fuel_used_is_the_budget_on_out_of_fuel_and_zero_otherwise(portable: Path) -> None:
    # issue 13 item 9: WAMR 2.4.3 keeps its instruction count in a local of the interpreter loop
    # (no API), so the only count the adapter knows is the budget it ran out of
    # (docs/protocol.md "Fuel, per runtime")
    out_of_fuel = _json(portable, "classify", "exception=Exception: instruction limit exceeded",
                        "fuel=200000")
    assert (out_of_fuel["outcome"], out_of_fuel["fuel_used"]) == (OUT_OF_FUEL, 200000)
    returned = _json(portable, "classify", "call_ok=1", "fuel=200000")
    assert (returned["outcome"], returned["fuel_used"]) == (RETURNED, 0)
    timed_out = _json(portable, "classify", "requested=4", "fuel=200000")
    assert (timed_out["outcome"], timed_out["fuel_used"]) == (TIMED_OUT, 0)
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    assert "### Fuel, per runtime" in protocol and "**0 otherwise**" in protocol
