// calyx under a service manager (systemd, conf/calyx.service, Type=notify): what it tells the
// manager, through libsystemd's sd_notify, and the upgrade that keeps the unit's main process
// inside the unit (doc/operations.md "Upgrading and restarting").
//
// Every notification is a no-op when calyx was not started by a service manager (no
// $NOTIFY_SOCKET): by hand, in tests, in a container.
#pragma once

#include <sys/types.h>

#include <expected>
#include <string>
#include <string_view>
#include <vector>

#include "calyx/config.hpp"
#include "cp/control_server.hpp"

namespace calyx::daemon {

// Whether a service manager asked to be notified ($NOTIFY_SOCKET at start).
bool under_service_manager();

// READY=1 with a STATUS= line: calyx serves (at start, and after a reload).
void notify_ready(std::string_view status);
// RELOADING=1 (with MONOTONIC_USEC=, as systemd 253's Type=notify-reload wants): a reload
// begins; notify_ready() ends it.
void notify_reloading();
// STATUS= only.
void notify_status(std::string_view status);
// STOPPING=1: calyx stops for good (never sent by a calyx that handed over).
void notify_stopping();
// The successor of a hand-over becomes the unit's main process: MAINPID=<this pid>, READY=1,
// then waits (sd_notify_barrier, at most 5 s) until the manager has read them, so that the
// manager knows its new main process before the old one exits (else the old one's exit would
// end the unit and take the successor with it).
void notify_main_process(std::string_view status);

// The binary this process was started from, read at start (a package upgrade replaces the file
// later; /proc/self/exe then names the deleted one). Call once early in main().
void remember_own_binary();
const std::string& own_binary();
// This process's CPU affinity before EAL pinned its threads: a successor starts with it.
void remember_start_affinity();

// Starts `binary --config CONFIG --take-over` as a child of this process: in the same cgroup
// (the unit's), with the same environment ($NOTIFY_SOCKET), stdout and stderr (the journal),
// no other inherited descriptor, no blocked signal and the affinity calyx started with.
std::expected<pid_t, std::string> spawn_successor(const std::string& binary, const std::string& config_path);

// Whether a successor can start beside the running calyx on the file at `config_path` as it is
// now: the file is valid (else every error, as for a reload), and its EAL --file-prefix is not
// the running one's (EAL refuses a second primary with the same prefix).
std::expected<void, cp::CommandError> successor_can_read(const std::string& config_path,
                                                         const config::Config& running);

// The parent of `pid` (from /proc), 0 when unknown.
pid_t parent_of(pid_t pid);

}  // namespace calyx::daemon
