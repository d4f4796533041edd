// The MPI transport: one process per stage, started by mpirun (Open MPI, MPICH, any MPI-3).
// Point-to-point messages with non-blocking sends and receives polled against a deadline, so no
// wait is unbounded even when a peer is stopped rather than dead (a dead peer makes mpirun end the
// job; a stopped one only stops answering). Built with TIERGEN_MPI; in a build without it,
// launched_by_mpirun() still detects mpirun so that `tiergen` can say it cannot join.
#pragma once

#include <memory>
#include <string>

#include "comm/transport.h"

namespace tiergen::comm {

// True when this process was started by mpirun with more than one rank (its environment says so).
bool launched_by_mpirun();
// The size of that job from the environment (1 when not under mpirun).
int mpirun_size();

// Whether this build has the MPI transport.
bool have_mpi();

// Initialises MPI (once per process), learns every rank's host, and returns this rank's transport.
// UnsupportedError in a build without MPI. The first MPI call of the process.
std::unique_ptr<Transport> make_mpi_transport();

// The rank's index among the ranks on its node (for picking its GPU); 0 outside MPI.
int node_local_rank(const Transport& t);

// A clean end for a run that succeeded: flushes, waits (at most `timeout`) until every rank got
// here, and finalises MPI. Not called on an error path: there the process exits and mpirun ends the
// job, instead of waiting in MPI_Finalize for a rank that may never come.
void finish_mpi(Transport& t, Duration timeout);

}  // namespace tiergen::comm
