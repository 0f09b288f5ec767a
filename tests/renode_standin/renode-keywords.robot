*** Settings ***
Documentation       A stand-in for renode-test's tests/renode-keywords.robot (renode 06854d4d),
...                 written here, not copied: the keywords our suites reach, with what they do
...                 there. ``Setup`` imports the Remote library from the keyword server at
...                 ``${PORT_NUMBER}`` as ``Renode`` (Renode retries the import for 60 s while
...                 its server starts) and resets the emulation; ``Teardown`` stops the server
...                 unless ``${SKIP_RUNNING_SERVER}`` (renode-test sets it: it owns the
...                 server); ``Test Teardown`` ends in ``Reset Emulation`` and ``Clear Cached
...                 Log``. No profiler, snapshots or saved logs.


*** Variables ***
${PORT_NUMBER}              9999
${SKIP_RUNNING_SERVER}      False
${DEFAULT_UART_TIMEOUT}     8


*** Keywords ***
Setup
    Wait Until Keyword Succeeds    60s    1s
    ...    Import Library    Remote    http://127.0.0.1:${PORT_NUMBER}/    AS    Renode
    Set Default Uart Timeout    ${DEFAULT_UART_TIMEOUT}
    Enable Logging To Cache
    Reset Emulation

Teardown
    IF    not ${SKIP_RUNNING_SERVER}    Stop Remote Server

Test Setup
    No Operation

Test Teardown
    Reset Emulation
    Clear Cached Log
