// Generated from commhub_lib/vocabulary.py by `python -m commhub_lib.vocabulary js`; do not edit.
// tests/test_vocabulary.py keeps it equal to the Python vocabulary.

export const EVENT = Object.freeze({"NEW_TASK": "new_task", "NEW_MESSAGE": "new_message", "NEW_REPLY": "new_reply", "BROADCAST": "broadcast", "WEBHOOK_DISABLED": "webhook_disabled", "LOOP_BROKEN": "loop_broken", "HEARTBEAT": "heartbeat"});
export const DELIVERED_EVENTS = Object.freeze(["new_task", "new_message", "new_reply", "broadcast", "loop_broken"]);
export const NETWORK_EVENTS = Object.freeze(["webhook_disabled"]);
export const TASK_STATUS = Object.freeze({"DELIVERED": "delivered", "RUNNING": "running", "INPUT_REQUIRED": "input_required", "REPLIED": "replied", "FAILED": "failed", "CANCELLED": "cancelled", "EXPIRED": "expired"});
export const TASK_STATUSES = Object.freeze(["delivered", "running", "input_required", "replied", "failed", "cancelled", "expired"]);
export const OPEN_TASK_STATUSES = Object.freeze(["delivered", "running", "input_required"]);
export const FINAL_TASK_STATUSES = Object.freeze(["replied", "failed", "cancelled", "expired"]);
export const REPLY_STATUS = Object.freeze({"DONE": "done", "FAILED": "failed", "PROGRESS": "progress", "QUESTION": "question"});
export const SESSION_STATUS = Object.freeze({"IDLE": "idle", "WORKING": "working", "OFFLINE": "offline"});
export const HELD_BY = Object.freeze({"RUNNER": "runner", "CHANNEL": "channel", "STREAM": "stream", "A2A": "a2a", "POLLING": "polling"});
export const TASK_FLAG = Object.freeze({"UNANSWERED": "unanswered"});
export const MESSAGE_KIND = Object.freeze({"MESSAGE": "message", "TASK": "task", "REPLY": "reply", "BROADCAST": "broadcast", "NOTICE": "notice"});
export const PRIORITIES = Object.freeze(["low", "normal", "high", "urgent"]);
export const DEFAULT_PRIORITY = "normal";
