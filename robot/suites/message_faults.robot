*** Settings ***
Documentation       Message faults at the gateway: a chosen protocol message dropped,
...                 duplicated, delayed, reordered or corrupted, and the outcome
...                 docs/protocol.md states (mirrors suites/messages/test_message_faults.py).
Resource            ../wasmbed.resource
Suite Setup         Wasmbed Suite Setup
Suite Teardown      Wasmbed Suite Teardown
Test Setup          Start Gateway With A Narrow Device
Test Teardown       Wasmbed Test Teardown    Clear Message Faults


*** Test Cases ***
Duplicated Chunk Is Ignored And The Module Runs
    Inject Message Fault    duplicate    DeployChunk    nth=2
    ${sum}=    Get Data Checksum    20000
    Run Module    data:20000    entry=checksum    outcome=RETURNED    values=${sum}    timeout=40s
    Message Faults Applied Should Be    1    action=duplicate    message=DeployChunk

Dropped Chunk Is Resumed On The Next Connection
    Inject Message Fault    drop    DeployChunk    nth=2
    ${sum}=    Get Data Checksum    20000
    Run Module    data:20000    entry=checksum    outcome=RETURNED    values=${sum}    timeout=40s
    Message Faults Applied Should Be    1    action=drop

Reordered Chunk Acks Are Cumulative
    Inject Message Fault    reorder    ChunkAck    nth=1    hold=500ms
    ${sum}=    Get Data Checksum    20000
    Run Module    data:20000    entry=checksum    outcome=RETURNED    values=${sum}    timeout=40s
    Message Faults Applied Should Be    1

Corrupted Chunk Data Fails With A Digest Mismatch
    Inject Message Fault    corrupt    DeployChunk    nth=2    mode=last-byte
    Deploy Module    data:20000    expected_error=DIGEST_MISMATCH    timeout=40s

Dropped Heartbeat Ack Leaves The Device Connected
    Inject Message Fault    drop    reply to Heartbeat    nth=2
    Wait For Heartbeats    4
    Device Phase Should Be    Connected
    Message Faults Applied Should Be    1    action=drop    message=HeartbeatAck


*** Keywords ***
Start Gateway With A Narrow Device
    [Documentation]    A gateway whose replies time out after 8 s (a lost message costs one
    ...    timeout) and a device with 4 KiB frames, so that a 20 kB module needs five chunks.
    Start Gateway    reply_timeout=8s
    Create Device    narrow    max_frame_size=4096
    Device Should Enroll And Connect
