/*
 * The gpu_metrics structures of the amdgpu driver, as the kernel defines
 * them: the input of gen.c, which fills them with known values and writes
 * the binary files the fixture trees hold.
 *
 * Source: torvalds/linux drivers/gpu/drm/amd/include/kgd_pp_interface.h
 * (struct metrics_table_header, gpu_metrics_v1_3 .. v1_6, and the
 * amd-gfx patches "drm/amd/pm: Add gpu_metrics_v1_6" (the second layout,
 * with amdgpu_xcp_metrics), "drm/amd/pm: Add gpu_metrics_v1_7" (Nov 2024,
 * amdgpu_xcp_metrics_v1_1) and "drm/amd/pm: Add gpu_metrics_v1_8"
 * (Mar 2025, amdgpu_xcp_metrics_v1_2)). Only the structures the decoder
 * reads are written out; field names, types, order and array sizes are
 * the kernel's, so gcc lays them out as the kernel does (natural alignment,
 * no packing). The kernel is MIT-licensed (the header's own notice):
 *
 * Copyright 2017 Advanced Micro Devices, Inc.
 * Permission is hereby granted, free of charge, to any person obtaining a
 * copy of this software and associated documentation files (the "Software"),
 * to deal in the Software without restriction, including without limitation
 * the rights to use, copy, modify, merge, publish, distribute, sublicense,
 * and/or sell copies of the Software, and to permit persons to whom the
 * Software is furnished to do so, subject to the following conditions:
 * The above copyright notice and this permission notice shall be included in
 * all copies or substantial portions of the Software.
 */
#include <stdint.h>

#define NUM_HBM_INSTANCES 4
#define NUM_XGMI_LINKS 8
#define MAX_GFX_CLKS 8
#define MAX_CLKS 4
#define NUM_VCN 4
#define NUM_JPEG_ENG 32
#define NUM_JPEG_ENG_V1 40
#define MAX_XCC 8
#define NUM_XCP 8

struct metrics_table_header {
	uint16_t structure_size;
	uint8_t format_revision;
	uint8_t content_revision;
};

struct amdgpu_xcp_metrics {
	uint32_t gfx_busy_inst[MAX_XCC];
	uint16_t jpeg_busy[NUM_JPEG_ENG];
	uint16_t vcn_busy[NUM_VCN];
	uint64_t gfx_busy_acc[MAX_XCC];
};

struct amdgpu_xcp_metrics_v1_1 {
	uint32_t gfx_busy_inst[MAX_XCC];
	uint16_t jpeg_busy[NUM_JPEG_ENG];
	uint16_t vcn_busy[NUM_VCN];
	uint64_t gfx_busy_acc[MAX_XCC];
	uint64_t gfx_below_host_limit_acc[MAX_XCC];
};

struct amdgpu_xcp_metrics_v1_2 {
	uint32_t gfx_busy_inst[MAX_XCC];
	uint16_t jpeg_busy[NUM_JPEG_ENG_V1];
	uint16_t vcn_busy[NUM_VCN];
	uint64_t gfx_busy_acc[MAX_XCC];
	uint64_t gfx_below_host_limit_ppt_acc[MAX_XCC];
	uint64_t gfx_below_host_limit_thm_acc[MAX_XCC];
	uint64_t gfx_low_utilization_acc[MAX_XCC];
	uint64_t gfx_below_host_limit_total_acc[MAX_XCC];
};

struct gpu_metrics_v1_3 {
	struct metrics_table_header common_header;
	uint16_t temperature_edge;
	uint16_t temperature_hotspot;
	uint16_t temperature_mem;
	uint16_t temperature_vrgfx;
	uint16_t temperature_vrsoc;
	uint16_t temperature_vrmem;
	uint16_t average_gfx_activity;
	uint16_t average_umc_activity;
	uint16_t average_mm_activity;
	uint16_t average_socket_power;
	uint64_t energy_accumulator;
	uint64_t system_clock_counter;
	uint16_t average_gfxclk_frequency;
	uint16_t average_socclk_frequency;
	uint16_t average_uclk_frequency;
	uint16_t average_vclk0_frequency;
	uint16_t average_dclk0_frequency;
	uint16_t average_vclk1_frequency;
	uint16_t average_dclk1_frequency;
	uint16_t current_gfxclk;
	uint16_t current_socclk;
	uint16_t current_uclk;
	uint16_t current_vclk0;
	uint16_t current_dclk0;
	uint16_t current_vclk1;
	uint16_t current_dclk1;
	uint32_t throttle_status;
	uint16_t current_fan_speed;
	uint16_t pcie_link_width;
	uint16_t pcie_link_speed;
	uint16_t padding;
	uint32_t gfx_activity_acc;
	uint32_t mem_activity_acc;
	uint16_t temperature_hbm[NUM_HBM_INSTANCES];
	uint64_t firmware_timestamp;
	uint16_t voltage_soc;
	uint16_t voltage_gfx;
	uint16_t voltage_mem;
	uint16_t padding1;
	uint64_t indep_throttle_status;
};

struct gpu_metrics_v1_4 {
	struct metrics_table_header common_header;
	uint16_t temperature_hotspot;
	uint16_t temperature_mem;
	uint16_t temperature_vrsoc;
	uint16_t curr_socket_power;
	uint16_t average_gfx_activity;
	uint16_t average_umc_activity;
	uint16_t vcn_activity[NUM_VCN];
	uint64_t energy_accumulator;
	uint64_t system_clock_counter;
	uint32_t throttle_status;
	uint32_t gfxclk_lock_status;
	uint16_t pcie_link_width;
	uint16_t pcie_link_speed;
	uint16_t xgmi_link_width;
	uint16_t xgmi_link_speed;
	uint32_t gfx_activity_acc;
	uint32_t mem_activity_acc;
	uint64_t pcie_bandwidth_acc;
	uint64_t pcie_bandwidth_inst;
	uint64_t pcie_l0_to_recov_count_acc;
	uint64_t pcie_replay_count_acc;
	uint64_t pcie_replay_rover_count_acc;
	uint64_t xgmi_read_data_acc[NUM_XGMI_LINKS];
	uint64_t xgmi_write_data_acc[NUM_XGMI_LINKS];
	uint64_t firmware_timestamp;
	uint16_t current_gfxclk[MAX_GFX_CLKS];
	uint16_t current_socclk[MAX_CLKS];
	uint16_t current_vclk0[MAX_CLKS];
	uint16_t current_dclk0[MAX_CLKS];
	uint16_t current_uclk;
	uint16_t padding;
};

struct gpu_metrics_v1_5 {
	struct metrics_table_header common_header;
	uint16_t temperature_hotspot;
	uint16_t temperature_mem;
	uint16_t temperature_vrsoc;
	uint16_t curr_socket_power;
	uint16_t average_gfx_activity;
	uint16_t average_umc_activity;
	uint16_t vcn_activity[NUM_VCN];
	uint16_t jpeg_activity[NUM_JPEG_ENG];
	uint64_t energy_accumulator;
	uint64_t system_clock_counter;
	uint32_t throttle_status;
	uint32_t gfxclk_lock_status;
	uint16_t pcie_link_width;
	uint16_t pcie_link_speed;
	uint16_t xgmi_link_width;
	uint16_t xgmi_link_speed;
	uint32_t gfx_activity_acc;
	uint32_t mem_activity_acc;
	uint64_t pcie_bandwidth_acc;
	uint64_t pcie_bandwidth_inst;
	uint64_t pcie_l0_to_recov_count_acc;
	uint64_t pcie_replay_count_acc;
	uint64_t pcie_replay_rover_count_acc;
	uint32_t pcie_nak_sent_count_acc;
	uint32_t pcie_nak_rcvd_count_acc;
	uint64_t xgmi_read_data_acc[NUM_XGMI_LINKS];
	uint64_t xgmi_write_data_acc[NUM_XGMI_LINKS];
	uint64_t firmware_timestamp;
	uint16_t current_gfxclk[MAX_GFX_CLKS];
	uint16_t current_socclk[MAX_CLKS];
	uint16_t current_vclk0[MAX_CLKS];
	uint16_t current_dclk0[MAX_CLKS];
	uint16_t current_uclk;
	uint16_t padding;
};

/* The first (1,6) layout (2024-05, reverted, then replaced). */
struct gpu_metrics_v1_6 {
	struct metrics_table_header common_header;
	uint16_t temperature_hotspot;
	uint16_t temperature_mem;
	uint16_t temperature_vrsoc;
	uint16_t curr_socket_power;
	uint16_t average_gfx_activity;
	uint16_t average_umc_activity;
	uint16_t vcn_activity[NUM_VCN];
	uint16_t jpeg_activity[NUM_JPEG_ENG];
	uint64_t energy_accumulator;
	uint64_t system_clock_counter;
	uint32_t accumulation_counter;
	uint32_t prochot_residency_acc;
	uint32_t ppt_residency_acc;
	uint32_t socket_thm_residency_acc;
	uint32_t vr_thm_residency_acc;
	uint32_t hbm_thm_residency_acc;
	uint32_t throttle_status;
	uint32_t gfxclk_lock_status;
	uint16_t pcie_link_width;
	uint16_t pcie_link_speed;
	uint16_t xgmi_link_width;
	uint16_t xgmi_link_speed;
	uint32_t gfx_activity_acc;
	uint32_t mem_activity_acc;
	uint64_t pcie_bandwidth_acc;
	uint64_t pcie_bandwidth_inst;
	uint64_t pcie_l0_to_recov_count_acc;
	uint64_t pcie_replay_count_acc;
	uint64_t pcie_replay_rover_count_acc;
	uint32_t pcie_nak_sent_count_acc;
	uint32_t pcie_nak_rcvd_count_acc;
	uint64_t xgmi_read_data_acc[NUM_XGMI_LINKS];
	uint64_t xgmi_write_data_acc[NUM_XGMI_LINKS];
	uint64_t firmware_timestamp;
	uint16_t current_gfxclk[MAX_GFX_CLKS];
	uint16_t current_socclk[MAX_CLKS];
	uint16_t current_vclk0[MAX_CLKS];
	uint16_t current_dclk0[MAX_CLKS];
	uint16_t current_uclk;
	uint16_t padding;
};

/*
 * The second (1,6) layout, the kernel's struct gpu_metrics_v1_6 after the
 * revert was re-applied ("Add new gpu_metrics_v1_6 with activities per
 * partition"); renamed here so that both (1,6) layouts fit in one file.
 */
struct gpu_metrics_v1_6_xcp {
	struct metrics_table_header common_header;
	uint16_t temperature_hotspot;
	uint16_t temperature_mem;
	uint16_t temperature_vrsoc;
	uint16_t curr_socket_power;
	uint16_t average_gfx_activity;
	uint16_t average_umc_activity;
	uint64_t energy_accumulator;
	uint64_t system_clock_counter;
	uint32_t accumulation_counter;
	uint32_t prochot_residency_acc;
	uint32_t ppt_residency_acc;
	uint32_t socket_thm_residency_acc;
	uint32_t vr_thm_residency_acc;
	uint32_t hbm_thm_residency_acc;
	uint32_t gfxclk_lock_status;
	uint16_t pcie_link_width;
	uint16_t pcie_link_speed;
	uint16_t xgmi_link_width;
	uint16_t xgmi_link_speed;
	uint32_t gfx_activity_acc;
	uint32_t mem_activity_acc;
	uint64_t pcie_bandwidth_acc;
	uint64_t pcie_bandwidth_inst;
	uint64_t pcie_l0_to_recov_count_acc;
	uint64_t pcie_replay_count_acc;
	uint64_t pcie_replay_rover_count_acc;
	uint32_t pcie_nak_sent_count_acc;
	uint32_t pcie_nak_rcvd_count_acc;
	uint64_t xgmi_read_data_acc[NUM_XGMI_LINKS];
	uint64_t xgmi_write_data_acc[NUM_XGMI_LINKS];
	uint64_t firmware_timestamp;
	uint16_t current_gfxclk[MAX_GFX_CLKS];
	uint16_t current_socclk[MAX_CLKS];
	uint16_t current_vclk0[MAX_CLKS];
	uint16_t current_dclk0[MAX_CLKS];
	uint16_t current_uclk;
	uint16_t num_partition;
	struct amdgpu_xcp_metrics xcp_stats[NUM_XCP];
	uint32_t pcie_lc_perf_other_end_recovery;
};

struct gpu_metrics_v1_7 {
	struct metrics_table_header common_header;
	uint16_t temperature_hotspot;
	uint16_t temperature_mem;
	uint16_t temperature_vrsoc;
	uint16_t curr_socket_power;
	uint16_t average_gfx_activity;
	uint16_t average_umc_activity;
	uint64_t mem_max_bandwidth;
	uint64_t energy_accumulator;
	uint64_t system_clock_counter;
	uint32_t accumulation_counter;
	uint32_t prochot_residency_acc;
	uint32_t ppt_residency_acc;
	uint32_t socket_thm_residency_acc;
	uint32_t vr_thm_residency_acc;
	uint32_t hbm_thm_residency_acc;
	uint32_t gfxclk_lock_status;
	uint16_t pcie_link_width;
	uint16_t pcie_link_speed;
	uint16_t xgmi_link_width;
	uint16_t xgmi_link_speed;
	uint32_t gfx_activity_acc;
	uint32_t mem_activity_acc;
	uint64_t pcie_bandwidth_acc;
	uint64_t pcie_bandwidth_inst;
	uint64_t pcie_l0_to_recov_count_acc;
	uint64_t pcie_replay_count_acc;
	uint64_t pcie_replay_rover_count_acc;
	uint32_t pcie_nak_sent_count_acc;
	uint32_t pcie_nak_rcvd_count_acc;
	uint64_t xgmi_read_data_acc[NUM_XGMI_LINKS];
	uint64_t xgmi_write_data_acc[NUM_XGMI_LINKS];
	uint16_t xgmi_link_status[NUM_XGMI_LINKS];
	uint16_t padding;
	uint64_t firmware_timestamp;
	uint16_t current_gfxclk[MAX_GFX_CLKS];
	uint16_t current_socclk[MAX_CLKS];
	uint16_t current_vclk0[MAX_CLKS];
	uint16_t current_dclk0[MAX_CLKS];
	uint16_t current_uclk;
	uint16_t num_partition;
	struct amdgpu_xcp_metrics_v1_1 xcp_stats[NUM_XCP];
	uint32_t pcie_lc_perf_other_end_recovery;
};

struct gpu_metrics_v1_8 {
	struct metrics_table_header common_header;
	uint16_t temperature_hotspot;
	uint16_t temperature_mem;
	uint16_t temperature_vrsoc;
	uint16_t curr_socket_power;
	uint16_t average_gfx_activity;
	uint16_t average_umc_activity;
	uint64_t mem_max_bandwidth;
	uint64_t energy_accumulator;
	uint64_t system_clock_counter;
	uint32_t accumulation_counter;
	uint32_t prochot_residency_acc;
	uint32_t ppt_residency_acc;
	uint32_t socket_thm_residency_acc;
	uint32_t vr_thm_residency_acc;
	uint32_t hbm_thm_residency_acc;
	uint32_t gfxclk_lock_status;
	uint16_t pcie_link_width;
	uint16_t pcie_link_speed;
	uint16_t xgmi_link_width;
	uint16_t xgmi_link_speed;
	uint32_t gfx_activity_acc;
	uint32_t mem_activity_acc;
	uint64_t pcie_bandwidth_acc;
	uint64_t pcie_bandwidth_inst;
	uint64_t pcie_l0_to_recov_count_acc;
	uint64_t pcie_replay_count_acc;
	uint64_t pcie_replay_rover_count_acc;
	uint32_t pcie_nak_sent_count_acc;
	uint32_t pcie_nak_rcvd_count_acc;
	uint64_t xgmi_read_data_acc[NUM_XGMI_LINKS];
	uint64_t xgmi_write_data_acc[NUM_XGMI_LINKS];
	uint16_t xgmi_link_status[NUM_XGMI_LINKS];
	uint16_t padding;
	uint64_t firmware_timestamp;
	uint16_t current_gfxclk[MAX_GFX_CLKS];
	uint16_t current_socclk[MAX_CLKS];
	uint16_t current_vclk0[MAX_CLKS];
	uint16_t current_dclk0[MAX_CLKS];
	uint16_t current_uclk;
	uint16_t num_partition;
	struct amdgpu_xcp_metrics_v1_2 xcp_stats[NUM_XCP];
	uint32_t pcie_lc_perf_other_end_recovery;
};
