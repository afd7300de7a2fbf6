/*
 * Writes the gpu_metrics files of the AMD fixture trees from the kernel's
 * own structures (gpu_metrics.h), filled with known values: the decoder's
 * offsets are checked against gcc's layout of the kernel's structs, not
 * against a hand-made table.
 *
 * Like the driver (smu_cmn_init_soft_gpu_metrics), each table starts as
 * all-ones bytes ("not supported") and the header gets sizeof() and the
 * version; the fields a part fills are then set. Fields left all-ones must
 * give no series.
 *
 *   gcc -std=c11 -Wall -Werror -o gen gen.c && ./gen <repository root>
 *
 * tests/e2e/amd.rs runs exactly this into a temporary root and checks the
 * checked-in files are what it writes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gpu_metrics.h"

static const char *root;

static void mkdirs(const char *path)
{
	char buf[1024];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p == '/') {
			*p = 0;
			if (mkdir(buf, 0755) && errno != EEXIST) {
				perror(buf);
				exit(1);
			}
			*p = '/';
		}
	}
}

static void put(const char *rel, const void *data, size_t len)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/%s", root, rel);
	mkdirs(path);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(data, 1, len, f) != len || fclose(f)) {
		perror(path);
		exit(1);
	}
}

#define INIT(m, crev)                                         \
	do {                                                  \
		memset(&(m), 0xff, sizeof(m));                \
		(m).common_header.structure_size = sizeof(m); \
		(m).common_header.format_revision = 1;        \
		(m).common_header.content_revision = (crev);  \
	} while (0)

/* Energy in the driver's unit, 2^-16 J (15.259 uJ). */
#define JOULES(j) ((uint64_t)(j) * 65536u)

/* MI250X: one GCD, gpu_metrics v1.3 (aldebaran_ppt.c). */
static void mi250x(const char *rel, int gcd)
{
	struct gpu_metrics_v1_3 m;
	INIT(m, 3);
	m.temperature_edge = 45 + gcd;
	m.temperature_hotspot = 62 + gcd;
	m.temperature_mem = 58;
	m.temperature_vrgfx = 50;
	m.temperature_vrsoc = 48;
	/* temperature_vrmem left unsupported */
	m.average_gfx_activity = 87 - 80 * gcd;
	m.average_umc_activity = 40 - 35 * gcd;
	m.average_socket_power = 385 - 250 * gcd;
	m.energy_accumulator = JOULES(3600 * (gcd + 1));
	m.system_clock_counter = 123456789000ull;
	m.average_gfxclk_frequency = 1690;
	m.average_uclk_frequency = 1600;
	m.current_gfxclk = 1700;
	m.current_socclk = 1090;
	m.current_uclk = 1600;
	m.throttle_status = 0;
	m.pcie_link_width = 16;
	m.pcie_link_speed = 160;
	m.gfx_activity_acc = 1000;
	m.mem_activity_acc = 500;
	m.temperature_hbm[0] = 55;
	m.temperature_hbm[1] = 56;
	m.temperature_hbm[2] = 57;
	/* temperature_hbm[3] left unsupported */
	m.firmware_timestamp = 99999;
	m.voltage_soc = 900;
	m.voltage_gfx = 850;
	m.voltage_mem = 1200;
	m.indep_throttle_status = 0;
	put(rel, &m, sizeof m);
}

/* MI300X on an early smu_v13_0_6 driver: v1.4. */
static void v1_4(const char *rel)
{
	struct gpu_metrics_v1_4 m;
	INIT(m, 4);
	m.temperature_hotspot = 71;
	m.temperature_mem = 66;
	m.temperature_vrsoc = 51;
	m.curr_socket_power = 640;
	m.average_gfx_activity = 91;
	m.average_umc_activity = 52;
	m.energy_accumulator = JOULES(5000);
	m.system_clock_counter = 1000;
	m.throttle_status = 0;
	m.pcie_link_width = 16;
	m.pcie_link_speed = 320;
	m.xgmi_link_width = 16;
	m.xgmi_link_speed = 32;
	m.pcie_l0_to_recov_count_acc = 4;
	m.pcie_replay_count_acc = 6;
	m.pcie_replay_rover_count_acc = 0;
	for (int i = 0; i < 7; i++) {
		m.xgmi_read_data_acc[i] = 1000 * (i + 1);
		m.xgmi_write_data_acc[i] = 2000 * (i + 1);
	}
	for (int i = 0; i < MAX_GFX_CLKS; i++)
		m.current_gfxclk[i] = 2100;
	m.current_uclk = 1300;
	put(rel, &m, sizeof m);
}

/* MI300X: v1.5. */
static void v1_5(const char *rel)
{
	struct gpu_metrics_v1_5 m;
	INIT(m, 5);
	m.temperature_hotspot = 70;
	m.temperature_mem = 65;
	m.temperature_vrsoc = 52;
	m.curr_socket_power = 650;
	m.average_gfx_activity = 93;
	m.average_umc_activity = 55;
	m.jpeg_activity[0] = 0;
	m.energy_accumulator = JOULES(10000);
	m.system_clock_counter = 2000;
	m.throttle_status = 0;
	m.pcie_link_width = 16;
	m.pcie_link_speed = 320;
	m.xgmi_link_width = 16;
	m.xgmi_link_speed = 32;
	m.pcie_bandwidth_acc = 100;
	m.pcie_bandwidth_inst = 12;
	m.pcie_l0_to_recov_count_acc = 1;
	m.pcie_replay_count_acc = 3;
	m.pcie_replay_rover_count_acc = 0;
	m.pcie_nak_sent_count_acc = 2;
	m.pcie_nak_rcvd_count_acc = 1;
	for (int i = 0; i < 7; i++) {
		m.xgmi_read_data_acc[i] = 1048576ull * (i + 1);
		m.xgmi_write_data_acc[i] = 2097152ull * (i + 1);
	}
	m.firmware_timestamp = 77;
	for (int i = 0; i < MAX_GFX_CLKS; i++)
		m.current_gfxclk[i] = 2100;
	m.current_uclk = 1300;
	put(rel, &m, sizeof m);
}

/* The first (1,6) layout. */
static void v1_6(const char *rel)
{
	struct gpu_metrics_v1_6 m;
	INIT(m, 6);
	m.temperature_hotspot = 72;
	m.temperature_mem = 67;
	m.curr_socket_power = 660;
	m.average_gfx_activity = 94;
	m.average_umc_activity = 56;
	m.energy_accumulator = JOULES(6000);
	m.accumulation_counter = 2000;
	m.prochot_residency_acc = 0;
	m.ppt_residency_acc = 500;
	m.socket_thm_residency_acc = 20;
	m.vr_thm_residency_acc = 0;
	m.hbm_thm_residency_acc = 0;
	m.pcie_link_width = 16;
	m.pcie_link_speed = 320;
	m.pcie_replay_count_acc = 8;
	m.pcie_nak_sent_count_acc = 5;
	m.xgmi_read_data_acc[0] = 4096;
	m.xgmi_write_data_acc[0] = 8192;
	put(rel, &m, sizeof m);
}

/* The second (1,6) layout: per-partition activity, no XGMI link state. */
static void v1_6_xcp(const char *rel)
{
	struct gpu_metrics_v1_6_xcp m;
	INIT(m, 6);
	m.temperature_hotspot = 73;
	m.temperature_mem = 68;
	m.temperature_vrsoc = 53;
	m.curr_socket_power = 670;
	m.average_gfx_activity = 75;
	m.average_umc_activity = 30;
	m.energy_accumulator = JOULES(7000);
	m.accumulation_counter = 3000;
	m.prochot_residency_acc = 1;
	m.ppt_residency_acc = 600;
	m.socket_thm_residency_acc = 0;
	m.vr_thm_residency_acc = 0;
	m.hbm_thm_residency_acc = 2;
	m.pcie_link_width = 16;
	m.pcie_link_speed = 320;
	m.xgmi_link_width = 16;
	m.xgmi_link_speed = 32;
	m.pcie_replay_count_acc = 11;
	m.pcie_nak_rcvd_count_acc = 4;
	for (int i = 0; i < 7; i++) {
		m.xgmi_read_data_acc[i] = 100 * (i + 1);
		m.xgmi_write_data_acc[i] = 200 * (i + 1);
	}
	for (int i = 0; i < MAX_GFX_CLKS; i++)
		m.current_gfxclk[i] = 1900 + i;
	m.current_uclk = 1300;
	m.num_partition = 4; /* QPX: two XCCs each */
	for (int p = 0; p < 4; p++)
		for (int x = 0; x < 2; x++)
			m.xcp_stats[p].gfx_busy_inst[x] = 10 * (p + 1) + x;
	m.pcie_lc_perf_other_end_recovery = 0;
	put(rel, &m, sizeof m);
}

/* MI300X on a newer driver: v1.7, one partition (SPX). */
static void v1_7(const char *rel)
{
	struct gpu_metrics_v1_7 m;
	INIT(m, 7);
	m.temperature_hotspot = 68;
	m.temperature_mem = 61;
	m.temperature_vrsoc = 50;
	m.curr_socket_power = 610;
	m.average_gfx_activity = 3;
	m.average_umc_activity = 1;
	m.mem_max_bandwidth = 5300;
	m.energy_accumulator = JOULES(20000);
	m.system_clock_counter = 3000;
	m.accumulation_counter = 1000;
	m.prochot_residency_acc = 0;
	m.ppt_residency_acc = 250;
	m.socket_thm_residency_acc = 10;
	m.vr_thm_residency_acc = 0;
	m.hbm_thm_residency_acc = 5;
	m.gfxclk_lock_status = 0;
	m.pcie_link_width = 16;
	m.pcie_link_speed = 320;
	m.xgmi_link_width = 16;
	m.xgmi_link_speed = 32;
	m.pcie_l0_to_recov_count_acc = 0;
	m.pcie_replay_count_acc = 0;
	m.pcie_replay_rover_count_acc = 0;
	m.pcie_nak_sent_count_acc = 0;
	m.pcie_nak_rcvd_count_acc = 0;
	for (int i = 0; i < 7; i++) {
		m.xgmi_read_data_acc[i] = 524288ull * (i + 1);
		m.xgmi_write_data_acc[i] = 262144ull * (i + 1);
		m.xgmi_link_status[i] = 1;
	}
	m.xgmi_link_status[6] = 0; /* a link that is down */
	m.firmware_timestamp = 88;
	for (int i = 0; i < MAX_GFX_CLKS; i++)
		m.current_gfxclk[i] = 140;
	m.current_uclk = 900;
	m.num_partition = 1;
	for (int x = 0; x < MAX_XCC; x++) {
		m.xcp_stats[0].gfx_busy_inst[x] = 2 + x % 2;
		m.xcp_stats[0].gfx_busy_acc[x] = 100;
	}
	m.pcie_lc_perf_other_end_recovery = 0;
	put(rel, &m, sizeof m);
}

/* MI355X: v1.8, split in two compute partitions (DPX) of four XCCs. */
static void v1_8(const char *rel)
{
	struct gpu_metrics_v1_8 m;
	INIT(m, 8);
	m.temperature_hotspot = 80;
	m.temperature_mem = 72;
	m.temperature_vrsoc = 60;
	m.curr_socket_power = 1250;
	m.average_gfx_activity = 60;
	m.average_umc_activity = 45;
	m.mem_max_bandwidth = 8000;
	m.energy_accumulator = JOULES(40000);
	m.system_clock_counter = 4000;
	m.accumulation_counter = 5000;
	m.prochot_residency_acc = 0;
	m.ppt_residency_acc = 1200;
	m.socket_thm_residency_acc = 0;
	m.vr_thm_residency_acc = 0;
	m.hbm_thm_residency_acc = 0;
	m.gfxclk_lock_status = 0;
	m.pcie_link_width = 16;
	m.pcie_link_speed = 320;
	m.xgmi_link_width = 16;
	m.xgmi_link_speed = 38;
	m.pcie_l0_to_recov_count_acc = 2;
	m.pcie_replay_count_acc = 9;
	m.pcie_replay_rover_count_acc = 0;
	m.pcie_nak_sent_count_acc = 0;
	m.pcie_nak_rcvd_count_acc = 0;
	for (int i = 0; i < NUM_XGMI_LINKS; i++) {
		m.xgmi_read_data_acc[i] = 3145728ull * (i + 1);
		m.xgmi_write_data_acc[i] = 1572864ull * (i + 1);
		m.xgmi_link_status[i] = 1;
	}
	m.firmware_timestamp = 99;
	for (int i = 0; i < MAX_GFX_CLKS; i++)
		m.current_gfxclk[i] = 2400;
	m.current_uclk = 1900;
	m.num_partition = 2;
	for (int p = 0; p < 2; p++)
		for (int x = 0; x < 4; x++) {
			m.xcp_stats[p].gfx_busy_inst[x] = p == 0 ? 95 : 25;
			m.xcp_stats[p].gfx_busy_acc[x] = 1000;
		}
	m.pcie_lc_perf_other_end_recovery = 1;
	put(rel, &m, sizeof m);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s <repository root>\n", argv[0]);
		return 2;
	}
	root = argv[1];
	const char *dev = "sys/class/drm/card%d/device/gpu_metrics";
	char rel[256];
#define AT(node, card) (snprintf(rel, sizeof rel, "tests/fixtures/amd/%s/", node), \
			snprintf(rel + strlen(rel), sizeof rel - strlen(rel), dev, card), rel)
	mi250x(AT("mi250x", 0), 0);
	mi250x(AT("mi250x", 1), 1);
	v1_5(AT("mi300x", 0));
	v1_7(AT("mi300x", 1));
	v1_8(AT("mi355x", 0));
	v1_4("tests/amd-fixtures/blobs/gpu_metrics_v1_4.bin");
	v1_6("tests/amd-fixtures/blobs/gpu_metrics_v1_6.bin");
	v1_6_xcp("tests/amd-fixtures/blobs/gpu_metrics_v1_6_xcp.bin");
	return 0;
}
