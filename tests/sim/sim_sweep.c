/*
 * sim_sweep.c: dht-sim sweep, fresh seeds for a given time (see sim.h).
 *
 * Each seed runs in a process of its own (this program again, with the
 * mode's command line and --count 1), so that a seed that crashes or hangs
 * takes nothing else down, and what it prints is its own. Seeds go to the
 * modes in turn: run (the fault phase), crashes, burst and scenarios, each
 * at the sizes CI runs them. A failing seed's output, which ends with the
 * command that replays it, is printed whole; a passing one prints nothing.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"

/* A seed that runs longer than this is stopped and counted as failed: a
 * run that does not end is a liveness bug, or a ring thrashing. */
#define SEED_TIMEOUT_S 300
#define JOBS_MAX 64
#define ARGS_MAX 16

/* One mode of the rotation and the options CI runs it with. */
typedef struct sweep_mode {
  const char *name;
  const char *args[ARGS_MAX]; /* after the mode and the seed; NULL-ended */
} sweep_mode;

static const sweep_mode rotation[] = {
    {"seeds", {"--count", "1", "--nodes-max", "48", "--fault-ms-max", "30000",
               NULL}},
    {"crashes", {"--count", "1", "--nodes-max", "48", "--crashes", "6", NULL}},
    {"burst", {"--count", "1", "--nodes-min", "32", "--nodes-max", "64",
               "--workload-keys", "1000", NULL}},
    {"scenarios", {NULL}},
};
#define N_ROTATION (sizeof(rotation) / sizeof(rotation[0]))

/* A seed in flight. */
typedef struct job {
  pid_t pid;        /* 0: the slot is free */
  uint64_t seed;    /* its seed */
  size_t mode;      /* index in rotation */
  char path[64];    /* where its output goes */
} job;

static double now_s(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Starts seed in mode as a child writing into a temporary file; false when
 * it could not (said on stderr). */
static bool job_start(job *j, const char *self, uint64_t seed, size_t mode) {
  const char *argv[ARGS_MAX + 5];
  char seed_arg[24];
  size_t n = 0, i;
  int fd;

  snprintf(j->path, sizeof(j->path), "/tmp/dht-sim-sweep-XXXXXX");
  fd = mkstemp(j->path);
  if (fd < 0) {
    fprintf(stderr, "dht-sim sweep: cannot create a file in /tmp: %s\n",
            strerror(errno));
    return false;
  }
  snprintf(seed_arg, sizeof(seed_arg), "%" PRIu64, seed);
  argv[n++] = self;
  argv[n++] = rotation[mode].name;
  argv[n++] = "--seed";
  argv[n++] = seed_arg;
  for (i = 0; rotation[mode].args[i] != NULL; i++) {
    argv[n++] = rotation[mode].args[i];
  }
  argv[n] = NULL;
  fflush(stdout);
  j->pid = fork();
  if (j->pid < 0) {
    fprintf(stderr, "dht-sim sweep: fork: %s\n", strerror(errno));
    close(fd);
    unlink(j->path);
    j->pid = 0;
    return false;
  }
  if (j->pid == 0) {
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
    alarm(SEED_TIMEOUT_S); /* kept across exec: SIGALRM ends a hung seed */
    execv(self, (char *const *)argv);
    fprintf(stderr, "dht-sim sweep: cannot run %s: %s\n", self,
            strerror(errno));
    _exit(127);
  }
  close(fd);
  j->seed = seed;
  j->mode = mode;
  return true;
}

/* Prints a failed job's output, which ends with its replay command. */
static void print_failure(const job *j, int status) {
  char buf[4096];
  size_t got;
  FILE *f = fopen(j->path, "r");

  printf("--- %s --seed %" PRIu64 ": ", rotation[j->mode].name, j->seed);
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
    printf("still running after %d s, stopped\n", SEED_TIMEOUT_S);
  } else if (WIFSIGNALED(status)) {
    printf("killed by signal %d\n", WTERMSIG(status));
  } else {
    printf("FAILED (exit %d)\n", WEXITSTATUS(status));
  }
  while (f != NULL && (got = fread(buf, 1, sizeof(buf), f)) > 0) {
    fwrite(buf, 1, got, stdout);
  }
  if (f != NULL) {
    fclose(f);
  }
  printf("---\n");
  fflush(stdout);
}

int sim_sweep(const sim_options *o) {
  job jobs[JOBS_MAX];
  uint64_t next = o->seed, ran[N_ROTATION] = {0}, failed = 0, done = 0;
  double start = now_s(), end = start + 60.0 * o->minutes;
  size_t running = 0, i, m;
  char self[4096];
  ssize_t len;

  len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) {
    fprintf(stderr, "dht-sim sweep: cannot find its own program: %s\n",
            strerror(errno));
    return 2;
  }
  self[len] = '\0';
  memset(jobs, 0, sizeof(jobs));
  printf("sweep: seeds from %" PRIu64 " for %" PRIu32 " min on %" PRIu32
         " jobs, modes in turn: seeds, crashes, burst, scenarios\n",
         o->seed, o->minutes, o->jobs);
  fflush(stdout);
  for (;;) {
    int status;
    pid_t pid;
    /* Fill every free slot while time is left. */
    for (i = 0; i < o->jobs && now_s() < end; i++) {
      if (jobs[i].pid == 0) {
        if (!job_start(&jobs[i], self, next, (size_t)(next % N_ROTATION))) {
          return 2;
        }
        next++;
        running++;
      }
    }
    if (running == 0) {
      break;
    }
    pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) {
        continue;
      }
      fprintf(stderr, "dht-sim sweep: waitpid: %s\n", strerror(errno));
      return 2;
    }
    for (i = 0; i < o->jobs && jobs[i].pid != pid; i++) {
    }
    if (i == o->jobs) {
      continue; /* not one of ours */
    }
    running--;
    done++;
    ran[jobs[i].mode]++;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      failed++;
      print_failure(&jobs[i], status);
    }
    unlink(jobs[i].path);
    jobs[i].pid = 0;
  }
  printf("sweep: %" PRIu64 " seeds (%" PRIu64 "..%" PRIu64 ") in %.1f min:",
         done, o->seed, next - 1, (now_s() - start) / 60.0);
  for (m = 0; m < N_ROTATION; m++) {
    printf(" %s %" PRIu64 ",", rotation[m].name, ran[m]);
  }
  printf(" %" PRIu64 " failed\n", failed);
  return failed == 0 ? 0 : 1;
}
